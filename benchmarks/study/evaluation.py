"""Every trained generator scored against the real slices, seed by seed, beside two reference points:
the real set against itself (random halves: the floor) and the generator as initialised (step 0).

medgan's samples are drawn as `medgan synthesize` draws them (`medgan.inference.synthesize.draw`: same
seed, same latents, the middle slice of a 2.5D slab) and brought back to the trainer's window.
"""

from __future__ import annotations

import argparse
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.study.common import log, real_dataset, real_images, real_slices, resolve_device, scan_names
from benchmarks.study.common import study_config as load_study_config
from benchmarks.study.report import write_figure
from benchmarks.study.scoring import (
    MAX_MS_SSIM_EXCESS,
    MIN_DISTINCT_NEIGHBOURS,
    MIN_RECALL,
    RealSet,
    build_extractors,
    diversity,
    features_of,
    progress,
    score,
    set_metrics,
    with_verdict,
)
from benchmarks.study.stock import STOCK, stock_generate
from medgan.tasks.checkpoint import checkpoint_step


def drawn_slices(g: torch.nn.Module, record: dict, count: int, seed: int, device: torch.device,
                 batch: int, truncation_psi: float | None = None) -> torch.Tensor:  # fmt: skip
    """`count` samples [N, H, W] in [0, 1]: drawn by medgan's synthesis, first channel, the trainer's window."""
    from medgan.data.transforms import to_unit
    from medgan.inference.synthesize import draw

    drawn = draw(g, record, count, seed, batch, None, device, truncation_psi=truncation_psi)
    return torch.stack([(to_unit(image[0], *record["window"]).clamp(-1, 1) + 1) / 2 for image, _ in drawn])


def untrained_generator(cfg, record: dict, device: torch.device) -> torch.nn.Module:
    """The generator as the trainer initialises it for this seed (step 0; the EMA starts as a copy)."""
    from medgan.tasks import TASKS
    from medgan.tasks.networks import build_task_networks

    torch.manual_seed(cfg.seed)  # as the trainer seeds it before building every network of the task
    nets = build_task_networks(cfg, record, batch_size=cfg.train.batch_size)
    return nets[TASKS.get(cfg.task).output_network].to(device).eval().requires_grad_(False)


def _floor(real: RealSet, splits: int) -> dict[str, dict]:
    """FD, KID and PRDC between random halves of the real set, per extractor."""
    floor = {}
    for tag in real.extractors:
        per_split = [set_metrics(real.features[tag][a], real.features[tag][b], real.nearest_k, 0)
                     for a, b in real.halves]  # fmt: skip
        floor[tag] = {
            "fd_mean": float(np.mean([m["fd"] for m in per_split])),
            "fd_std": float(np.std([m["fd"] for m in per_split])),
            "kid_mean": float(np.mean([m["kid"]["mean"] for m in per_split])),
            **{f"{k}_mean": float(np.mean([m[k] for m in per_split]))
               for k in ("precision", "recall", "density", "coverage")},
            "n_per_half": [len(real.halves[0][0]), len(real.halves[0][1])],
            "splits": splits,
        }  # fmt: skip
    return floor


def _real_set(args: argparse.Namespace, dataset, device: torch.device, evaluation: dict, rng) -> tuple:
    """The real slices, their features, halves and diversity; what the evaluation records about them."""
    real, real_scans = real_images(dataset)
    names = scan_names(dataset)
    log(f"real set: {len(real)} slices of {tuple(real.shape[1:])} from {len(names)} scans")
    extractors, skipped = build_extractors(args.extractors)
    evaluation.update(
        n_real=int(real.shape[0]),
        window=list(dataset.windows["image"]),
        normalisation="the trainer's window (data.window or its percentiles) -> [-1, 1], then (x + 1) / 2",
        extractors={tag: {"input_size": list(e.input_size), **e.provenance} for tag, e in extractors.items()},
        extractors_skipped=skipped,
        nearest_k=args.nearest_k,
        verdict_criteria={
            "recall_min": MIN_RECALL,
            "ms_ssim_excess_max": MAX_MS_SSIM_EXCESS,
            "distinct_nearest_fraction_min": MIN_DISTINCT_NEIGHBOURS,
            "rule": "no mode collapse when all three hold, on random_cnn features (k-NN, k = 5)",
        },
    )
    features = {tag: features_of(real, e, device, args.eval_batch) for tag, e in extractors.items()}
    halves = []
    for _ in range(args.splits):
        order = rng.permutation(len(real))
        halves.append((order[: len(real) // 2], order[len(real) // 2 :]))
    real_div = diversity(real[torch.from_numpy(rng.permutation(len(real))[: 2 * args.diversity_pairs])],
                         args.diversity_pairs, 0, device)  # fmt: skip
    reference = RealSet(features, halves, extractors, real_scans, names, real_div, device, args.eval_batch,
                        args.nearest_k, args.diversity_pairs)  # fmt: skip
    return real, reference


def _untrained(args: argparse.Namespace, runs: dict, cfg, dataset, real: RealSet, device: torch.device) -> dict:
    """The generator as initialised for the first seed that trained, scored on the same latents."""
    first_ok = next((s for s in args.seeds if runs.get(str(s), {}).get("checkpoint")), (args.seeds or [0])[0])
    try:
        cfg0 = load_study_config(args.config, args.data, [*args.set], seed=first_ok)
        # The trainer's data record: a 2.5D generator makes slabs of cfg.data.slab_slices, not single slices.
        record = dataset.record if cfg.data.slab_slices == 1 else real_dataset(cfg).record
        g0 = untrained_generator(cfg0, record, device)
        fake0 = drawn_slices(g0, record, args.samples, first_ok, device, args.gen_batch)
        del g0
        untrained = with_verdict(score("untrained", fake0, real), real.extractors)
        untrained["note"] = f"the generator as initialised for seed {first_ok} (step 0), the same latents drawn"
        return untrained
    except Exception:
        return {"error": traceback.format_exc(limit=3)[-1500:]}


def evaluate(args, out: str, runs: dict[str, dict], cfg, report: dict, deadline: float | None, save) -> None:
    """Fill report['evaluation'] seed by seed, so that whatever finished is kept."""
    from medgan.inference import load_generators
    from medgan.io.png import to_uint8

    device = resolve_device(args.device)
    evaluation: dict[str, Any] = {"device": str(device), "seeds": {}}
    report["evaluation"] = evaluation
    started = time.monotonic()
    rng = np.random.default_rng(0)
    dataset = real_slices(cfg)
    images, real = _real_set(args, dataset, device, evaluation, rng)
    floor = _floor(real, args.splits)
    evaluation["reference"] = {
        "real_halves": floor,
        "real_halves_note": "random halves of the real slices (adjacent slices of a subject fall in both halves, "
        "so this floor is optimistic)",
        "ms_ssim_diversity_real": real.diversity,
    }
    figure = [images[torch.from_numpy(rng.permutation(len(images))[:8])]]
    figure_rows = ["real"]
    untrained = _untrained(args, runs, cfg, dataset, real, device)
    evaluation["reference"]["untrained_generator"] = untrained
    save()

    def one(kind: str, seed: int, run: dict, draw: Callable[[], torch.Tensor],
            annotate: Callable[[dict], None]) -> None:  # fmt: skip
        """Score one generator into evaluation[seeds|stock][seed]; a failure is recorded and the study goes on."""
        section, stem = ("seeds", "seed") if kind == "medgan" else ("stock", "stock")
        if not run.get("checkpoint"):
            evaluation[section][str(seed)] = {"error": f"no checkpoint (training {run.get('status', 'not run')})"}
            return
        if deadline is not None and time.monotonic() > deadline:
            evaluation[section][str(seed)] = {"error": "skipped: the study's time budget was spent"}
            return
        try:
            fake = draw()
            result = score(f"{kind} seed {seed}", fake, real)
            annotate(result)
            with_verdict(result, real.extractors)
            figure.append(fake[:8])
            figure_rows.append(f"{kind} seed {seed}")
            if args.save_samples:
                path = os.path.join(out, f"{stem}{seed}_samples.pt")
                torch.save(torch.from_numpy(to_uint8(fake[:64].numpy(), 0.0, 1.0)), path)
                result["samples_file"] = path
            evaluation[section][str(seed)] = result
        except Exception:
            evaluation[section][str(seed)] = {"error": traceback.format_exc(limit=4)[-2000:]}
        save()  # what is done stays on disk if the suite's timer ends the study

    psi_asked = getattr(args, "truncation", None)  # the tests' small Namespaces may not carry it
    drawn_with: dict[int, float | None] = {}

    def draw_medgan(run: dict, seed: int) -> torch.Tensor:
        from medgan.inference.synthesize import truncation_used

        model = load_generators(run["checkpoint"], device)
        drawn_with[seed] = truncation_used(model.output, psi_asked)
        return drawn_slices(model.output, model.record, args.samples, seed, device, args.gen_batch, psi_asked)

    def annotate_medgan(run: dict, seed: int) -> Callable[[dict], None]:
        def annotate(result: dict) -> None:
            result["checkpoint"] = run["checkpoint"]
            result["checkpoint_step"] = checkpoint_step(run["checkpoint"])
            result["training_status"] = run["status"]
            result["truncation_psi"] = drawn_with.get(seed)
            for tag in real.extractors:
                result[tag]["fd_progress"] = progress(result[tag], untrained.get(tag), floor[tag])

        return annotate

    size = tuple(images.shape[1:])

    def annotate_stock(result: dict) -> None:
        result["note"] = f"MONAI DCGAN tutorial at {STOCK['image_size']}^2" + (
            ", upsampled (bilinear) to the real slices' size to be scored" if size != (STOCK["image_size"],) * 2 else ""
        )

    for seed in args.seeds:
        run = runs.get(str(seed), {})
        one("medgan", seed, run, lambda run=run, seed=seed: draw_medgan(run, seed), annotate_medgan(run, seed))
    evaluation["stock"] = {}
    for seed in args.stock_seeds:
        run = report.get("stock_runs", {}).get(str(seed), {})
        one("stock", seed, run,
            lambda run=run, seed=seed: stock_generate(run["checkpoint"], args.samples, seed, device, size,
                                                      args.gen_batch),
            annotate_stock)  # fmt: skip
    if args.figure:
        write_figure(args.figure, figure)
        evaluation["figure"] = {"path": os.path.abspath(args.figure), "rows": figure_rows}
    if device.type == "cuda":
        evaluation["gpu_memory_gib_max"] = torch.cuda.max_memory_allocated(device) / 2**30
    evaluation["seconds"] = round(time.monotonic() - started, 2)
