"""The figures of one generated set against the real set, and the mode-collapse verdict.

Features come from `medgan.metrics.features` (random_cnn, and efficientnet_lite0 when it imports);
FD, KID, precision/recall/density/coverage and MS-SSIM diversity from `medgan.metrics.distribution`;
each sample's nearest real slice from `medgan.metrics.memorization`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks.study.common import log

# The mode-collapse verdict: a seed passes when all three hold (fake vs real, same extractor, same window).
MIN_RECALL = 0.1  # the samples reach at least this fraction of the real manifold (random_cnn, k = 5)
MAX_MS_SSIM_EXCESS = 0.1  # mean MS-SSIM between fake pairs at most this above the real set's: not near-identical
MIN_DISTINCT_NEIGHBOURS = 0.2  # distinct nearest real slices of the samples / min(real, fake) count
VERDICT_TAG = "random_cnn"  # the extractor the verdict reads


@dataclass
class RealSet:
    """The real slices as every generated set is scored against them."""

    features: dict[str, torch.Tensor]  # per extractor tag: [N, D] on the device
    halves: list[tuple[np.ndarray, np.ndarray]]  # random splits of the real set (the floor; split 0 for FD N/2)
    extractors: dict[str, Any]
    scans: list[int]  # the scan each slice came from
    scan_names: list[str]
    diversity: dict[str, float]  # MS-SSIM between real pairs
    device: torch.device
    eval_batch: int
    nearest_k: int
    diversity_pairs: int


def build_extractors(names: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    from medgan.metrics.features import EXTRACTORS

    built, skipped = {}, {}
    for name in names:
        try:
            extractor = EXTRACTORS.build(name, spatial_dims=2)
        except Exception as err:  # an optional extra that is not installed: say so and go on
            skipped[name] = f"{type(err).__name__}: {err}"
            continue
        built[extractor.name] = extractor
    return built, skipped


def features_of(images: torch.Tensor, extractor, device: torch.device, batch: int) -> torch.Tensor:
    """Features [N, D] of images [N, H, W] in [0, 1], on the device."""
    from medgan.metrics.features import extract_features

    return torch.from_numpy(extract_features(images, extractor, "native", device, batch)).to(device)


def set_metrics(real: torch.Tensor, fake: torch.Tensor, k: int, seed: int) -> dict[str, Any]:
    from medgan.metrics.distribution import frechet_distance, kid, prdc

    subset = max(2, min(real.shape[0], fake.shape[0]) // 2)
    kid_mean, kid_std = kid(real, fake, subset_size=subset, n_subsets=100, seed=seed)
    return {
        "fd": frechet_distance(real, fake),
        "kid": {"mean": kid_mean, "std": kid_std, "subset_size": subset, "subsets": 100},
        **prdc(real, fake, nearest_k=k),
        "n_real": int(real.shape[0]),
        "n_fake": int(fake.shape[0]),
    }


def diversity(images: torch.Tensor, pairs: int, seed: int, device: torch.device) -> dict[str, float]:
    from medgan.metrics.distribution import ms_ssim_diversity

    return ms_ssim_diversity(images.to(device), data_range=1.0, n_pairs=pairs, seed=seed)


def nearest_real(real: torch.Tensor, fake: torch.Tensor, real_scans: list[int], scan_names: list[str]) -> dict:
    """Each sample's nearest real slice (feature space): how many distinct slices and subjects they reach."""
    from medgan.metrics.memorization import nearest_by_distance

    _, nearest = nearest_by_distance(fake.cpu().numpy(), real.cpu().numpy())
    distinct = len(set(nearest.tolist()))
    per_subject: dict[str, int] = {}
    for index in nearest:
        name = scan_names[real_scans[int(index)]]
        per_subject[name] = per_subject.get(name, 0) + 1
    counts = np.bincount(nearest, minlength=real.shape[0])
    return {
        "distinct_real_slices": distinct,
        "distinct_fraction": distinct / min(real.shape[0], fake.shape[0]),
        "most_hit_slice_share": float(counts.max() / len(nearest)),
        "samples_per_subject": dict(sorted(per_subject.items())),
    }


def progress(metrics: dict, untrained: dict | None, floor: dict) -> float | None:
    """How far FD went from the untrained generator (0) to the real/real floor (1), at the floor's N, on a log
    scale: FD spans orders of magnitude and falls most in the first steps (gross intensity statistics), so a
    linear share would read 90% after a handful of steps."""
    if not untrained:
        return None
    start, end, now = untrained["fd_matched_half"]["fd"], floor["fd_mean"], metrics["fd_matched_half"]["fd"]
    if not (start > end > 0 and now > 0):
        return None
    return math.log(start / now) / math.log(start / end)


def verdict(metrics: dict[str, Any], tag: str) -> dict[str, Any]:
    recall = metrics[tag]["recall"]
    ms = metrics["ms_ssim_diversity"]
    excess = ms["fake"]["mean"] - ms["real"]["mean"]
    spread = metrics["nearest_real"][tag]["distinct_fraction"]
    checks = {
        f"recall_{tag} > {MIN_RECALL}": recall > MIN_RECALL,
        f"fake MS-SSIM - real MS-SSIM <= {MAX_MS_SSIM_EXCESS}": excess <= MAX_MS_SSIM_EXCESS,
        f"distinct nearest real slices / min(N real, N fake) >= {MIN_DISTINCT_NEIGHBOURS}": spread
        >= MIN_DISTINCT_NEIGHBOURS,
    }
    failed = [name for name, passed in checks.items() if not passed]
    return {
        "mode_collapse": bool(failed),
        "verdict": "no mode collapse" if not failed else "mode collapse suspected: " + "; ".join(failed),
        "checks": checks,
        "values": {"recall": recall, "ms_ssim_excess": excess, "distinct_fraction": spread},
    }


def score(name: str, fake: torch.Tensor, real: RealSet) -> dict[str, Any]:
    """Every figure of one generated set ([N, H, W] in [0, 1]) against the real set, and its verdict."""
    result: dict[str, Any] = {"n_samples": int(fake.shape[0]), "nearest_real": {}}
    for tag, extractor in real.extractors.items():
        started = time.monotonic()
        fake_feats = features_of(fake, extractor, real.device, real.eval_batch)
        metrics = set_metrics(real.features[tag], fake_feats, real.nearest_k, 0)
        half_a, half_b = real.halves[0]
        matched = fake_feats[: len(half_b)]
        metrics["fd_matched_half"] = {
            "fd": set_metrics(real.features[tag][half_a], matched, real.nearest_k, 0)["fd"],
            "n_real": len(half_a),
            "n_fake": int(matched.shape[0]),
            "note": "real half A (split 0) vs the first |B| samples: compare with the real-halves floor at equal N",
        }
        metrics["seconds"] = round(time.monotonic() - started, 2)
        result[tag] = metrics
        result["nearest_real"][tag] = nearest_real(real.features[tag], fake_feats, real.scans, real.scan_names)
    result["ms_ssim_diversity"] = {
        "real": real.diversity,
        "fake": diversity(fake[: 2 * real.diversity_pairs], real.diversity_pairs, 0, real.device),
    }
    log(f"{name}: " + ", ".join(f"fd_{t} {result[t]['fd']:.4g}" for t in real.extractors))
    return result


def with_verdict(result: dict[str, Any], extractors: dict[str, Any]) -> dict[str, Any]:
    """`result` with its verdict (None when the verdict's extractor was not built)."""
    result["verdict"] = verdict(result, VERDICT_TAG) if VERDICT_TAG in extractors else None
    return result
