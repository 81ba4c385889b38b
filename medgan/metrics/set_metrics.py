"""The set metrics of `medgan evaluate` (`SET_METRICS`): each reads one `EvaluationRun` and adds
its numbers, keyed by the extractor's tag where they come from features (`fd_random_cnn`).

A metric is one registered function; `medgan.metrics.evaluate` reads the sets, extracts the
features once, and calls every metric asked for. The formulas are in `medgan.metrics.distribution`
and `medgan.metrics.memorization`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medgan.errors import ConfigError
from medgan.metrics import distribution
from medgan.metrics.collect import SetData
from medgan.metrics.features import PLANES
from medgan.metrics.memorization import MemorizationResult, memorization
from medgan.registry import Registry

__all__ = [
    "DEFAULT_SET_METRICS",
    "FEATURE_METRICS",
    "SET_METRICS",
    "EvaluationRun",
    "minimum_images",
    "resolve_metrics",
]

SET_METRICS: Registry = Registry("set metric")
DEFAULT_SET_METRICS = ("fd", "kid", "prdc", "diversity", "intensity", "memorization")
FEATURE_METRICS = {"fd", "kid", "prdc", "memorization"}


@dataclass
class EvaluationRun:
    """Inputs and options of one evaluation; set metrics read it and add to `results`."""

    real: SetData
    fake: SetData
    train: SetData | None
    tag: str | None  # extractor name (+ "_2.5d"): the suffix of every feature-based metric
    planes: int
    options: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)
    memorization: MemorizationResult | None = None
    warnings: list[str] = field(default_factory=list)


def minimum_images(name: str, nearest_k: int) -> int:
    """The fewest images per set the metric `name` can be computed from."""
    return {"fd": 2, "kid": 2, "prdc": nearest_k + 1, "diversity": 2}.get(name, 1)


@SET_METRICS.register("fd")
def _fd(run: EvaluationRun) -> None:
    real, fake = run.real.features, run.fake.features
    run.results[f"fd_{run.tag}"] = distribution.frechet_distance(real, fake)
    if run.planes > 1:  # MAISI reports the 2.5D FID of each plane; the mean is theirs too
        d = real.shape[1] // run.planes
        per_plane = {
            plane: distribution.frechet_distance(real[:, i * d : (i + 1) * d], fake[:, i * d : (i + 1) * d])
            for i, plane in enumerate(PLANES)
        }
        run.results[f"fd_{run.tag}_planes"] = {**per_plane, "mean": float(np.mean(list(per_plane.values())))}
    n_min, dims = min(real.shape[0], fake.shape[0]), real.shape[1]
    if n_min <= dims:
        run.warnings.append(
            f"FD from {n_min} samples of {dims}-d features: the covariances are singular and FD is biased upward; "
            "compare FDs only at equal sample sizes"
        )


@SET_METRICS.register("kid")
def _kid(run: EvaluationRun) -> None:
    size, subsets = run.options["kid_subset_size"], run.options["kid_subsets"]
    mean, std = distribution.kid(run.real.features, run.fake.features, size, subsets, seed=run.options["seed"])
    used = min(size, run.real.features.shape[0], run.fake.features.shape[0])
    run.results[f"kid_{run.tag}"] = {"mean": mean, "std": std, "subset_size": used, "subsets": subsets}


@SET_METRICS.register("prdc")
def _prdc(run: EvaluationRun) -> None:
    k = run.options["nearest_k"]
    for key, value in distribution.prdc(run.real.features, run.fake.features, nearest_k=k).items():
        run.results[f"{key}_{run.tag}"] = value
    run.results["prdc_nearest_k"] = k


@SET_METRICS.register("diversity")
def _diversity(run: EvaluationRun) -> None:
    pairs, seed = run.options["diversity_pairs"], run.options["seed"]
    run.results["ms_ssim_diversity"] = {
        role: distribution.ms_ssim_diversity(data.diversity, data_range=1.0, n_pairs=pairs, seed=seed)
        for role, data in (("real", run.real), ("fake", run.fake))
    }


@SET_METRICS.register("intensity")
def _intensity(run: EvaluationRun) -> None:
    value = distribution.wasserstein_1d(run.real.values, run.fake.values)
    run.results["intensity_w1"] = {"value": value, "units": run.options["units"]}


@SET_METRICS.register("memorization")
def _memorization(run: EvaluationRun) -> None:
    names = {role: [d.images.name(i) for i in range(len(d.features))] for role, d in (("real", run.real),
                                                                                     ("train", run.train))}  # fmt: skip
    result = memorization(
        run.fake.features, run.train.features, run.real.features, run.fake.pixels, run.train.pixels, run.real.pixels,
        heldout_names=names["real"], train_names=names["train"],
    )  # fmt: skip
    run.memorization = result
    summary = result.summary()
    summary["flagged_samples"] = [
        {
            "fake": run.fake.images.name(int(i)),
            "train_pixel_match": run.train.images.name(int(result.pixel_match[i])),
            "train_feature_match": run.train.images.name(int(result.feature_match[i])),
            "ncc": float(result.pixel_correlation[i]),
            "feature_distance": float(result.feature_distance[i]),
        }
        for i in np.flatnonzero(result.flagged)
    ]
    run.results[f"memorization_{run.tag}"] = summary
    run.warnings += result.warnings


def resolve_metrics(metrics: Sequence[str] | None, has_train: bool) -> list[str]:
    """Validated metric names (did-you-mean on a typo); memorization only with a training set."""
    if not metrics:
        return [m for m in DEFAULT_SET_METRICS if m != "memorization" or has_train]
    names = []
    for name in metrics:
        SET_METRICS.get(name)
        if name == "memorization" and not has_train:
            raise ConfigError("the memorization metric needs the training set (--train DIR)")
        if name not in names:
            names.append(name)
    return names
