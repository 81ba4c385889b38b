"""Small real data study: does the default 2D config train on a few hundred real brain MR slices
from a handful of subjects without mode collapse, over several seeds, and how close do its samples come?

    # here (CPU, PyPI and Debian reachable): gather and normalise the scans; DIR is a build product, never committed
    python benchmarks/small_data_study.py prepare --out .study_data

    # on the GPU (no network): one training process per seed, all at once on the one GPU, then evaluation
    python benchmarks/small_data_study.py run --data .study_data --out study_out --seeds 0 1 2 --minutes 2.5 \
        --device cuda [--config configs/synth2d_256.yaml] [--set key=value ...] [--samples 500] [--json FILE] \
        [--stock-seeds 0 ...] [--figure FILE.png]

    # against images seen, not wall clock (CPU 64 x 64 here; any config on a GPU): split by subject, train
    # to the largest count with a checkpoint at each, score every checkpoint beside the held-out floor
    python benchmarks/small_data_study.py run --data .study_data --out seen_out --device cpu \
        --config configs/synth2d_64.yaml --seeds 0 --stock-seeds 0 --images 10000 25000 50000 \
        [--holdout colin27] [--figure docs/figures/small_data_images_cpu64.png] [--samples-figure samples.png] \
        [--jobs 1]   # runs trained in turn, each with every core (default: all at once, sharing them)

    # the same folder again: --resume scores what is there and trains each medgan seed on to counts it lacks
    # (here 100k); --truncation draws with another psi than the config's
    python benchmarks/small_data_study.py run ... --out seen_out --images 10000 25000 50000 100000 --resume \
        [--truncation 0.5] [--json other.json]

    # redraw those curves from saved JSON, the same study with other settings beside (green), and print the
    # per-count comparison (mean over seeds and every seed's FD / floor, precision, recall)
    python benchmarks/small_data_study.py figure seen_out/small_data_study.json --out curves.png \
        [--label "as shipped"] [--variant "ADA speed 100k=ada_out/small_data_study.json" ...]

`--images` (benchmarks/study/seen.py, seen_score.py): the data folder is split by subject (`--holdout`,
default colin27: the floor is a new real subject's slices); medgan trains to each count in ceil(count /
batch) steps (`medgan train`, then `--resume` to the next count, with a save point every 5000 images
between counts that `run --resume` goes on from after a stop) and the stock peer keeps its generator at
each count; every checkpoint draws as many samples as there are held-out slices and is scored on
EfficientNet-Lite0 and random_cnn (FD, KID, precision, recall, density, coverage, the ratio to the floor)
with the collapse check (mean pairwise NCC of the samples within 0.1 of the training slices'). `--minutes`
is then unused.

`prepare` fetches real T1 MR volumes from registry packages (see /work/shared/DATA.md) into the tests'
cache (`.cache/medgan-tests/` or `$MEDGAN_TEST_CACHE`, fetched with the helpers of `tests/external.py`):
the MNI152 2009 T1 template (nilearn wheel, read out of the zip), Colin27 (Debian `mricron-data`),
ITK's `KmeansTest_T1UCharRaw` (Debian `insighttoolkit5-examples`) and the brain1/brain2 T1 of the
pyradiomics 3.0.1 sdist. Each is read with medgan's readers, reoriented to RAS, resampled to 1 mm
in-plane and `--slice-mm` (2 mm) between axial slices (never finer than the scan's own spacing, so
no slice is made up by interpolation), mapped per subject to 0..1000 (0.5th and 99.5th percentiles
inside the head), cropped to the head and written as int16 NIfTI with a BIDS sidecar naming the
modality (MR), plus `manifest.json` (sources, versions, licences, geometry, usable slices).

`run` starts `python -m medgan train` once per seed, concurrently, stopped by train.time_limit_minutes
with a final checkpoint; then draws `--samples` images from each final EMA generator and scores them
against every usable real slice, loaded by medgan's own dataset code with the run's config (so the
real set is exactly what the trainer saw, in its window): Fréchet distance and KID on the
`random_cnn` extractor (and `efficientnet_lite0` when it imports), precision/recall/density/coverage
(k = 5), MS-SSIM diversity, nearest-real-neighbour spread, and a mode-collapse verdict per seed.
Reference points: FD between random halves of the real set (the floor, and the same N for the fakes)
and the generator as initialised (step 0). The stock peer trains beside them for the same time and
is scored the same way: MONAI's MedNIST DCGAN tutorial as published (64 x 64, its Generator and
Discriminator, BCE, Adam 2e-4, batch 300, five D steps per G step; `--stock-seeds`, none to leave it
out), its samples upsampled to larger real slices to be scored. `--figure` writes real slices and every seed's
first samples as one PNG. Writes everything to one JSON file; exits 0 when at least one seed was
evaluated, even if others failed (their failure and log tail are recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.study.common import DEFAULT_CONFIG, log, study_config
from benchmarks.study.evaluation import evaluate
from benchmarks.study.prepare import prepare
from benchmarks.study.report import data_summary, print_table
from benchmarks.study.runs import study_overrides, train_seeds
from benchmarks.study.stock import stock_train


def run(args: argparse.Namespace) -> int:
    from medgan import __version__
    from medgan.errors import MedganError
    from medgan.tasks.config import RunConfig
    from medgan.tasks.networks import check_networks
    from medgan.training.precision import native_bf16

    began = time.monotonic()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    json_path = args.json or os.path.join(out, "small_data_study.json")
    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    args.eval_batch = args.eval_batch or (128 if cuda else 32)
    args.gen_batch = args.gen_batch or (64 if cuda else 16)
    report: dict[str, Any] = {
        "study": "small real data: default 2D config, several seeds, mode collapse and set metrics",
        "command": " ".join(sys.argv),
        "medgan_version": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device_name": torch.cuda.get_device_name() if cuda and torch.cuda.is_available() else "cpu",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # without AVX-512, precision auto is fp32
        "native_bf16": native_bf16(torch.device("cuda" if cuda and torch.cuda.is_available() else "cpu")),
        "config": args.config,
        "seeds": args.seeds,
        "minutes": args.minutes,
        "samples": args.samples,
        "user_overrides": list(args.set),
        "truncation_psi": args.truncation,
        "warnings": [],
    }
    deadline = None if args.budget_s is None else began + args.budget_s

    def write() -> None:
        report["timing"]["total_s"] = round(time.monotonic() - began, 2)
        with open(json_path + ".partial", "w") as fh:
            json.dump(report, fh, indent=2, default=float)
        os.replace(json_path + ".partial", json_path)

    report["timing"] = {}
    status = 1
    if args.images:
        from benchmarks.study.seen import run_seen

        report["study"] = "small real data against images seen: medgan and the stock DCGAN beside the floor"
        try:
            status = run_seen(args, report, out, write)
        except (SystemExit, MedganError) as err:
            report["error"] = str(err)
            log(str(err))
        except Exception:
            report["error"] = traceback.format_exc(limit=6)[-3000:]
            log(report["error"])
        finally:
            write()
        print(f"wrote {json_path}")
        return status
    try:
        supported = "time_limit_minutes" in RunConfig.model_fields
        if not supported:
            report["warnings"].append("train.time_limit_minutes is not in this medgan: runs end at --kill-after")
        minutes = args.minutes if supported and args.minutes > 0 else None
        sets = study_overrides(os.path.abspath(args.data), minutes, args.log_every, args.checkpoint_every)
        if args.device != "auto":
            sets.append(f"train.device={args.device}")
        report["study_overrides"] = sets
        cfg = study_config(args.config, os.path.abspath(args.data), [*sets, *args.set], seed=(args.seeds or [0])[0])
        if not args.seeds and not args.stock_seeds:
            raise SystemExit("nothing to train: give --seeds, --stock-seeds or both")
        check_networks(cfg)  # a typo or an impossible size fails here, not in every run
        if cfg.task != "unconditional":
            raise SystemExit(f"the study draws samples from noise: task must be unconditional, not {cfg.task}")
        report["data"] = data_summary(args.data, cfg)
        for run_dir in [*(os.path.join(out, f"seed{s}") for s in args.seeds),
                        *(os.path.join(out, f"stock{s}") for s in args.stock_seeds)]:  # fmt: skip
            if os.path.exists(run_dir):
                if not args.overwrite:
                    raise SystemExit(f"{run_dir} exists; pass --overwrite or choose another --out")
                shutil.rmtree(run_dir)
        if args.kill_after is None:
            args.kill_after = (args.minutes * 60 if minutes else 600) + args.grace_s
            if deadline is not None:
                args.kill_after = min(args.kill_after, max(30.0, args.budget_s - args.eval_reserve_s))
        train_began = time.monotonic()
        report["runs"], report["stock_runs"] = train_seeds(args, out, [*sets])
        train_wall = time.monotonic() - train_began
        report["timing"]["train_wall_s"] = round(train_wall, 2)
        write()
        eval_began = time.monotonic()
        evaluate(args, out, report["runs"], cfg, report, deadline, write)
        eval_s = time.monotonic() - eval_began
        report["timing"]["eval_s"] = round(eval_s, 2)
        report["timing"]["gpu_minutes"] = round((train_wall + eval_s) / 60, 3) if cuda else 0.0
        report["timing"]["gpu_minutes_note"] = "all seeds share one GPU: wall time of training + evaluation"
        seeds = report["evaluation"]["seeds"]
        evaluated = [s for s, r in seeds.items() if "error" not in r]
        collapsed = [s for s in evaluated if (seeds[s].get("verdict") or {}).get("mode_collapse")]
        report["summary"] = {
            "seeds_trained": sum(r["status"] == "ok" for r in report["runs"].values()),
            "seeds_evaluated": len(evaluated),
            "seeds_mode_collapse_suspected": collapsed,
            "all_seeds_without_collapse": bool(evaluated) and not collapsed and len(evaluated) == len(args.seeds),
        }
        stock = report["evaluation"].get("stock", {})
        stock_evaluated = [s for s, r in stock.items() if "error" not in r]
        report["summary"]["stock_seeds_evaluated"] = len(stock_evaluated)
        report["summary"]["stock_seeds_mode_collapse_suspected"] = [
            s for s in stock_evaluated if (stock[s].get("verdict") or {}).get("mode_collapse")
        ]
        status = 0 if evaluated or stock_evaluated else 1
    except (SystemExit, MedganError) as err:
        report["error"] = str(err)
        log(str(err))
    except Exception:
        report["error"] = traceback.format_exc(limit=6)[-3000:]
        log(report["error"])
    finally:
        write()
    print_table(report)
    print(f"wrote {json_path}")
    return status


def figure(args: argparse.Namespace) -> int:
    """Redraw the images-seen curves from saved reports, with variants beside, and print the comparison table."""
    from benchmarks.study.seen_figure import compare_rows, print_compare, write_curves
    from benchmarks.study.seen_score import lead_tag

    def load(path: str) -> dict[str, Any]:
        try:
            with open(path) as fh:
                report = json.load(fh)
        except (OSError, ValueError) as err:
            raise SystemExit(f"{path}: cannot read the study's JSON ({err})") from err
        if "scores" not in report or "floor" not in report.get("reference", {}):
            raise SystemExit(f"{path}: not a scored images-seen study (run --images writes one)")
        return report

    base = load(args.report)
    variants = {}
    for item in args.variant:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"--variant {item}: expected LABEL=REPORT.json")
        variants[label] = load(path)
    tag = args.extractor or lead_tag(base["reference"]["floor"])
    if tag not in base["reference"]["floor"]:
        raise SystemExit(f"--extractor {tag}: the report scored {', '.join(base['reference']['floor'])}")
    write_curves(args.out, base, tag, variants, base_label=f"medgan, {args.label}")
    reports = {args.label: (base, "medgan"), **{k: (v, "medgan") for k, v in variants.items()},
               "stock DCGAN": (base, "stock")}  # fmt: skip
    print_compare(compare_rows(reports, tag))
    print(f"wrote {args.out} ({tag})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="gather and normalise the real scans (here: needs PyPI and Debian)")
    p.add_argument("--out", required=True, help="the data folder to write (replaced whole)")
    p.add_argument("--slice-mm", type=float, default=2.0, help="axial slice spacing (never finer than the scan's)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="whose slice filter counts the usable slices")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override of that config")
    p.add_argument("--only", nargs="+", help="only these subjects (for debugging)")
    r = sub.add_parser("run", help="train every seed concurrently, then evaluate (GPU or CPU)")
    r.add_argument("--data", required=True, help="the folder `prepare` wrote")
    r.add_argument("--out", required=True, help="run folders, logs and the JSON go here")
    r.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="medgan seeds (none: the stock peer only)")
    r.add_argument(
        "--stock-seeds",
        type=int,
        nargs="*",
        default=[0],
        help="seeds of the stock peer, MONAI's DCGAN tutorial, trained beside (none: leave it out)",
    )
    r.add_argument("--minutes", type=float, default=2.5, help="train.time_limit_minutes of every run (0: none)")
    r.add_argument("--device", default="cuda", choices=["auto", "cpu", "cuda"])
    r.add_argument("--config", default=DEFAULT_CONFIG)
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (after ours)")
    r.add_argument("--samples", type=int, default=500, help="samples drawn from each final generator")
    r.add_argument("--json", help="default: OUT/small_data_study.json")
    r.add_argument("--extractors", nargs="+", default=["random_cnn", "efficientnet_lite0"])
    r.add_argument("--nearest-k", type=int, default=5)
    r.add_argument("--diversity-pairs", type=int, default=100)
    r.add_argument("--splits", type=int, default=5, help="random halves of the real set for the FD floor")
    r.add_argument("--log-every", type=int, default=25)
    r.add_argument("--checkpoint-every", type=int, default=500, help="fallback checkpoints (a killed run)")
    r.add_argument("--kill-after", type=float, help="seconds before unfinished runs are killed "
                   "(default: minutes + grace)")  # fmt: skip
    r.add_argument("--grace-s", type=float, default=60.0, help="start-up and final checkpoint, beyond --minutes")
    r.add_argument("--budget-s", type=float, help="whole study; training is cut to leave --eval-reserve-s")
    r.add_argument("--eval-reserve-s", type=float, default=40.0)
    r.add_argument("--eval-batch", type=int, help="feature extraction batch (default 128 on CUDA, 32 on the CPU)")
    r.add_argument("--gen-batch", type=int, help="generator batch (default 64 on CUDA, 16 on the CPU)")
    r.add_argument("--save-samples", action="store_true", help="keep 64 samples per seed as uint8 tensors")
    r.add_argument("--figure", help="a PNG: 8 real slices, then the first 8 samples of every seed, a row each")
    r.add_argument("--overwrite", action="store_true", help="replace seed folders left by an earlier run")
    r.add_argument("--jobs", type=int, help="with --images: runs trained at once, the cores shared between them "
                   "(default: every run at once). Fewer finish whole runs sooner, so a study stopped part-way "
                   "leaves complete seeds; on a 2-core CPU the total time was about the same "
                   "(docs/benchmarks.md)")  # fmt: skip
    r.add_argument(
        "--resume",
        action="store_true",
        help="with --images: keep the seed folders an earlier run of "
        "this --out left; medgan seeds train on from their newest checkpoint (a count's, or a save point "
        "kept every 5000 images between counts, so a stopped study loses at most that) to the counts they "
        "lack (the stock peer, which cannot, starts again), and seeds that have every count are only scored",
    )
    r.add_argument(
        "--samples-figure",
        help="with --images: a PNG of 8 training and 8 held-out slices, then the first "
        "8 samples of every run at its largest count, a row each (top to bottom in that order)",
    )
    r.add_argument(
        "--truncation",
        type=float,
        help="medgan samples drawn with this truncation psi (medgan synthesize --truncation; 1: none; "
        "default: the config's generator option, as synthesize draws)",
    )
    r.add_argument("--images", type=int, nargs="+", help="measure against images seen instead of --minutes: train "
                   "to the largest count, score a checkpoint at each (e.g. 10000 25000 50000)")  # fmt: skip
    r.add_argument("--holdout", nargs="+", default=["colin27"], help="with --images: subjects left out of training, "
                   "the floor's held-out real slices")  # fmt: skip
    t = sub.add_parser("stock", help="(started by run) train the stock peer, MONAI's DCGAN tutorial, once")
    t.add_argument("--data", required=True)
    t.add_argument("--config", default=DEFAULT_CONFIG, help="whose dataset code and window give the real slices")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--out", required=True, help="its run folder: generator.pt, stats.jsonl, summary.json")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--minutes", type=float, default=0.0, help="training time, from the start of the process")
    t.add_argument("--images", type=int, nargs="+", help="train to the largest count instead, G kept at each")
    t.add_argument("--device", default="cuda")
    f = sub.add_parser("figure", help="redraw the images-seen curves from saved JSON, variants beside, and compare")
    f.add_argument("report", help="the JSON of a run --images study (its medgan and stock seeds, its floor)")
    f.add_argument("--out", required=True, help="the PNG to write")
    f.add_argument("--label", default="as shipped", help="what the report's medgan runs are")
    f.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=JSON",
        help="the same study with other settings (same split and floor): its medgan seeds in green",
    )
    f.add_argument("--extractor", help="default: efficientnet_lite0 when scored")
    args = parser.parse_args()
    if args.command == "figure":
        return figure(args)
    if args.command == "prepare":
        return prepare(args)
    if args.command == "stock":
        return stock_train(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
