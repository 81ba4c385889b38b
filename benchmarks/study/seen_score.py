"""Every checkpoint of the images-seen study scored beside its floor, at the same sample sizes.

The reference is the training subjects' slices (what the models saw, in the trainer's window); the floor
is the held-out subjects' slices against it, and each generated set has as many samples as there are
held-out slices. Per extractor (EfficientNet-Lite0, random_cnn): Fréchet distance, KID,
precision/recall/density/coverage (`benchmarks.study.scoring.set_metrics`, on `medgan.metrics`), and the
ratio to the floor. The collapse check is the mean pairwise correlation (NCC) of the samples: a set whose
value is more than `CORRELATION_TOLERANCE` away from the training slices' is flagged, on either side as the
issue words the rule; the table names the side, since only samples more alike than real slices are collapse.
"""

from __future__ import annotations

import argparse
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks.study.common import log, real_images, real_slices, resolve_device, study_config
from benchmarks.study.scoring import build_extractors, features_of, set_metrics

CORRELATION_TOLERANCE = 0.1  # |mean pairwise NCC of samples - of real slices| above this: collapse suspected
LEAD_TAG = "efficientnet_lite0"  # the extractor the summary and the figure lead with


def lead_tag(tags) -> str:
    """The extractor to lead with among those scored: LEAD_TAG when it was, else the first."""
    tags = list(tags)
    return LEAD_TAG if LEAD_TAG in tags else tags[0]


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    from medgan.metrics.distribution import frechet_distance as fd

    return fd(real, fake)


def mean_pairwise_correlation(images: torch.Tensor) -> float:
    """Mean NCC over all pairs i < j of images [N, H, W] (pixel space, each image zero-mean, unit norm)."""
    from medgan.metrics.memorization import unit_vectors

    u = torch.from_numpy(unit_vectors(images.cpu().numpy())).double()
    n = u.shape[0]
    if n < 2:
        raise ValueError("the mean pairwise correlation needs at least two images")
    gram = u @ u.T
    return float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))


@dataclass
class Reference:
    """The training slices as every generated set is scored against them, and the floor."""

    extractors: dict[str, Any]
    train: dict[str, torch.Tensor]  # per extractor tag: features [N_train, D]
    floor: dict[str, dict[str, Any]]  # per tag: the held-out slices' metrics against the training slices
    slice_floor: dict[str, float]  # per tag: FD of n_samples random training slices against the other ones
    rest: np.ndarray | None  # those other training slices (the slice floor's reference), None if too few
    correlation: dict[str, float]  # mean pairwise NCC: training slices, held-out slices
    n_samples: int  # samples per generated set: as many as held-out slices
    size: tuple[int, int]
    device: torch.device
    batch: int
    nearest_k: int
    examples: dict[str, torch.Tensor]  # 8 random training and 8 random held-out slices, for the samples figure


def build_reference(args: argparse.Namespace, split: dict[str, Any], record: dict[str, Any]) -> Reference:
    """Features of the training and held-out slices; the floor per extractor. The held-out slices are read
    in the training set's window (the trainer's percentiles of the training subjects), as samples are."""
    device = resolve_device(args.device)
    train_set = real_slices(study_config(args.config, split["train"]["folder"], list(args.set)))
    train, _ = real_images(train_set)
    low, high = train_set.windows["image"]
    heldout_cfg = study_config(args.config, split["heldout"]["folder"], [*args.set, f"data.window=[{low}, {high}]"])
    heldout, _ = real_images(real_slices(heldout_cfg))
    extractors, skipped = build_extractors(args.extractors)
    record.update(
        n_train_slices=int(train.shape[0]),
        n_heldout_slices=int(heldout.shape[0]),
        window=[float(low), float(high)],
        extractors={tag: {"input_size": list(e.input_size), **e.provenance} for tag, e in extractors.items()},
        extractors_skipped=skipped,
        nearest_k=args.nearest_k,
    )
    log(f"training slices {len(train)}, held-out slices {len(heldout)}, extractors {', '.join(extractors)}")
    # The slice floor, for comparison: as many random training slices as held-out ones against the other
    # training slices. Adjacent slices of one subject fall on both sides, so it is far lower than the subject floor.
    n = int(heldout.shape[0])
    order = np.random.default_rng(0).permutation(len(train))
    rest = order[n:] if len(train) - n >= 2 else None
    feats, floor, slice_floor = {}, {}, {}
    for tag, extractor in extractors.items():
        feats[tag] = features_of(train, extractor, device, args.eval_batch)
        held = features_of(heldout, extractor, device, args.eval_batch)
        floor[tag] = set_metrics(feats[tag], held, args.nearest_k, 0)
        if rest is not None:
            slice_floor[tag] = frechet_distance(feats[tag][rest], feats[tag][order[:n]])
    correlation = {"train": mean_pairwise_correlation(train), "heldout": mean_pairwise_correlation(heldout)}
    pick = np.random.default_rng(1)
    examples = {"training": train[torch.from_numpy(pick.permutation(len(train))[:8])],
                "held out": heldout[torch.from_numpy(pick.permutation(len(heldout))[:8])]}  # fmt: skip
    return Reference(extractors, feats, floor, slice_floor, rest, correlation, n, tuple(train.shape[1:]), device,
                     args.eval_batch, args.nearest_k, examples)  # fmt: skip


def score_set(fake: torch.Tensor, ref: Reference) -> dict[str, Any]:
    """One generated set ([N, H, W] in [0, 1], N = ref.n_samples) against the training slices, beside the floor."""
    result: dict[str, Any] = {"n_samples": int(fake.shape[0])}
    for tag, extractor in ref.extractors.items():
        fake_feats = features_of(fake, extractor, ref.device, ref.batch)
        metrics = set_metrics(ref.train[tag], fake_feats, ref.nearest_k, 0)
        floor = ref.floor[tag]
        metrics["fd_over_floor"] = metrics["fd"] / floor["fd"] if floor["fd"] > 0 else None
        metrics["kid_minus_floor"] = metrics["kid"]["mean"] - floor["kid"]["mean"]
        if ref.rest is not None:  # against the slice floor's reference, at its sizes
            fd = frechet_distance(ref.train[tag][ref.rest], fake_feats)
            metrics["slice_split"] = {
                "fd": fd,
                "floor_fd": ref.slice_floor[tag],
                "fd_over_floor": fd / ref.slice_floor[tag],
            }
        result[tag] = metrics
    value = mean_pairwise_correlation(fake)
    excess = value - ref.correlation["train"]
    result["correlation"] = {
        "samples": value,
        "train": ref.correlation["train"],
        "difference": excess,
        "collapse_suspected": abs(excess) > CORRELATION_TOLERANCE,
    }
    return result


def correlation_flag(correlation: dict[str, Any]) -> str:
    """The table's mark for a set outside the correlation rule, naming which side it is on ("" within it)."""
    if not correlation["collapse_suspected"]:
        return ""
    if correlation["difference"] > 0:
        return "COLLAPSE? (more alike than real)"
    return "OFF RULE (less alike than real)"


def score_all(args: argparse.Namespace, runs: dict[str, dict[str, dict]], ref: Reference, save,
              first: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:  # fmt: skip
    """Every checkpoint of every run, count by count; a failure is recorded and the rest go on. `first`, when
    given, receives the first 8 samples of each run's last scored checkpoint under "<kind> seed <seed>"."""
    from benchmarks.study.evaluation import drawn_slices
    from benchmarks.study.stock import stock_generate
    from medgan.inference import load_generators
    from medgan.inference.synthesize import truncation_used

    scores: dict[str, Any] = {"medgan": {}, "stock": {}}
    for kind, by_seed in runs.items():
        for seed, run in by_seed.items():
            per_count: dict[str, Any] = {}
            scores[kind][seed] = per_count
            for count, checkpoint in run["checkpoints"].items():
                if not checkpoint["path"]:
                    per_count[count] = {"error": f"no checkpoint (training {run['status']})"}
                    continue
                started, psi = time.monotonic(), None
                try:
                    if kind == "medgan":
                        model = load_generators(checkpoint["path"], ref.device)
                        fake = drawn_slices(model.output, model.record, ref.n_samples, int(seed), ref.device,
                                            args.gen_batch, args.truncation)  # fmt: skip
                        psi = truncation_used(model.output, args.truncation)
                    else:
                        fake = stock_generate(checkpoint["path"], ref.n_samples, int(seed), ref.device, ref.size,
                                              args.gen_batch)  # fmt: skip
                    result = score_set(fake, ref)
                    if first is not None:
                        first[f"{kind} seed {seed}"] = fake[:8]
                    result["truncation_psi"] = psi
                    result["images_seen"] = checkpoint["images_seen"]
                    result["checkpoint"] = checkpoint["path"]
                    result["seconds"] = round(time.monotonic() - started, 2)
                    per_count[count] = result
                    lead = result.get(LEAD_TAG) or next(v for k, v in result.items() if k in ref.extractors)
                    log(f"{kind} seed {seed} at {count} images: FD {lead['fd']:.4g} "
                        f"({lead['fd_over_floor']:.2f}x floor), recall {lead['recall']:.2f}")  # fmt: skip
                except Exception:
                    per_count[count] = {"error": traceback.format_exc(limit=4)[-2000:]}
                save()
    return scores


def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per (kind, seed, count) and one for the floor: what the table and the docs show."""
    scores, reference = report.get("scores", {}), report.get("reference", {})
    rows = []
    for kind in ("medgan", "stock"):
        for seed, per_count in scores.get(kind, {}).items():
            for count, result in per_count.items():
                row: dict[str, Any] = {"kind": kind, "seed": int(seed), "images": int(count)}
                if "error" in result:
                    row["error"] = result["error"].strip().splitlines()[-1][:120]
                else:
                    row["images_seen"] = result.get("images_seen")
                    for tag in reference.get("extractors", {}):
                        m, sliced = result[tag], result[tag].get("slice_split") or {}
                        row[tag] = {"fd": m["fd"], "fd_over_floor": m["fd_over_floor"], "kid": m["kid"]["mean"],
                                    "precision": m["precision"], "recall": m["recall"],
                                    "fd_over_slice_floor": sliced.get("fd_over_floor")}  # fmt: skip
                    row["correlation"] = result["correlation"]
                rows.append(row)
    return rows


def print_seen_table(report: dict[str, Any]) -> None:
    """The lead extractor's figures, one line per checkpoint, then the floor."""
    reference = report.get("reference", {})
    tags = list(reference.get("extractors", {}))
    if not tags:
        print(report.get("error", "nothing was scored"))
        return
    tag = lead_tag(tags)
    other = [t for t in tags if t != tag]
    print(f"\n{'run':<10} {'images':>7} {'FD':>8} {'/floor':>7} {'/slices':>7} {'KID':>8} {'prec':>5} {'rec':>5} "
          + "".join(f"{'FD ' + t[:10]:>15}" for t in other) + f" {'corr':>6} {'vs real':>8}")  # fmt: skip
    for row in summary_rows(report):
        name = f"{row['kind']} {row['seed']}"
        if "error" in row:
            print(f"{name:<10} {row['images']:>7}  {row['error']}")
            continue
        m, c = row[tag], row["correlation"]
        flag = f"  {correlation_flag(c)}".rstrip()
        print(f"{name:<10} {row['images']:>7} {m['fd']:>8.4g} {m['fd_over_floor']:>7.2f} "
              f"{m['fd_over_slice_floor'] or float('nan'):>7.2f} {m['kid']:>8.4f} "
              f"{m['precision']:>5.2f} {m['recall']:>5.2f} " + "".join(f"{row[t]['fd']:>15.4g}" for t in other)
              + f" {c['samples']:>6.3f} {c['difference']:>+8.3f}{flag}")  # fmt: skip
    floor = reference["floor"][tag]
    print(f"{'floor':<10} {'':>7} {floor['fd']:>8.4g} {1:>7.2f} {'':>7} {floor['kid']['mean']:>8.4f} "
          f"{floor['precision']:>5.2f} {floor['recall']:>5.2f} "
          + "".join(f"{reference['floor'][t]['fd']:>15.4g}" for t in other)
          + f" {reference['correlation']['heldout']:>6.3f}")  # fmt: skip
    print(
        f"{tag} features unless named; floor: held-out subjects' slices vs the training slices, "
        f"{reference.get('n_heldout_slices')} vs {reference.get('n_train_slices')}, as many samples per set; "
        f"corr: mean pairwise NCC of the samples (training slices: {reference['correlation']['train']:.3f})"
    )
