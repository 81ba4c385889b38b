"""The set metrics of `medgan evaluate` (`SET_METRICS`): each reads one `EvaluationRun` and adds
its numbers, keyed by the extractor's tag where they come from features (`fd_random_cnn`), once for
every extractor of the run. Each distribution metric (fd, kid, prdc, intensity) also adds its
real-vs-real floor beside the value (`fd_random_cnn_floor`: generated and floor at equal sample sizes,
and their ratio; `medgan.metrics.floors`), and fd adds each extractor's separation (FD of the real set
against the generated set over FD between two real halves).

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
from medgan.metrics.floors import REFERENCES, FloorPlan, floor_entry, rows_of, separation
from medgan.metrics.memorization import MemorizationResult, memorization
from medgan.registry import Registry

__all__ = [
    "DEFAULT_SET_METRICS",
    "FEATURE_METRICS",
    "FLOOR_METRICS",
    "SET_METRICS",
    "EvaluationRun",
    "minimum_images",
    "resolve_metrics",
]

SET_METRICS: Registry = Registry("set metric")
DEFAULT_SET_METRICS = ("fd", "kid", "prdc", "diversity", "intensity", "memorization")
FEATURE_METRICS = {"fd", "kid", "prdc", "memorization"}
FLOOR_METRICS = {"fd", "kid", "prdc", "intensity"}  # distribution metrics: each gets a real-vs-real floor


@dataclass
class EvaluationRun:
    """Inputs and options of one evaluation; set metrics read it and add to `results`."""

    real: SetData
    fake: SetData
    train: SetData | None
    tags: list[str]  # extractor names (+ "_2.5d"), the suffix of every feature-based metric; the first leads
    planes: dict[str, int]  # per tag: 3 for 2.5D features (three planes concatenated), else 1
    options: dict[str, Any]
    real_b: SetData | None = None  # a second real set, for the floor only
    floor: FloorPlan | None = None  # rows of the real-vs-real floor (None: no floors)
    results: dict[str, Any] = field(default_factory=dict)
    separation: dict[str, Any] = field(default_factory=dict)  # per tag: FD of real halves vs real and generated
    memorization: dict[str, MemorizationResult] = field(default_factory=dict)  # per tag
    warnings: list[str] = field(default_factory=list)

    @property
    def tag(self) -> str | None:
        """The first extractor's tag (the one metrics.json's `extractor` describes)."""
        return self.tags[0] if self.tags else None

    @property
    def floor_set(self) -> SetData:
        """The second real set of the floor: --real-b, the training set, or the real set itself (split-half)."""
        return {"real_b": self.real_b, "train": self.train}.get(self.floor.reference) or self.real


def minimum_images(name: str, nearest_k: int) -> int:
    """The fewest images per set the metric `name` can be computed from."""
    return {"fd": 2, "kid": 2, "prdc": nearest_k + 1, "diversity": 2}.get(name, 1)


def _floor_sets(run: EvaluationRun, name: str, tag: str | None):
    """(reference, second real, generated) for the floor of metric `name`: features of `tag`, or voxel values
    when tag is None; None when there is no floor or its sets are too small (with a warning, once)."""
    plan = run.floor
    if plan is None:
        return None
    need = minimum_images(name, run.options["nearest_k"])
    if min(len(plan.real_rows), plan.compared) < need:
        message = (
            f"no real-vs-real floor for {name}: the floor compares {len(plan.real_rows)} with {plan.compared} "
            f"images ({REFERENCES[plan.reference]}), and {name} needs {need} per set"
        )
        if message not in run.warnings:
            run.warnings.append(message)
        return None
    if tag is None:
        return tuple(d.values_of(r) for d, r in ((run.real, plan.real_rows), (run.floor_set, plan.other_rows),
                                                 (run.fake, plan.fake_rows)))  # fmt: skip
    return tuple(rows_of(d.features[tag], r) for d, r in ((run.real, plan.real_rows), (run.floor_set, plan.other_rows),
                                                        (run.fake, plan.fake_rows)))  # fmt: skip


@SET_METRICS.register("fd")
def _fd(run: EvaluationRun) -> None:
    for tag in run.tags:
        real, fake = run.real.features[tag], run.fake.features[tag]
        run.results[f"fd_{tag}"] = distribution.frechet_distance(real, fake)
        planes = run.planes[tag]
        if planes > 1:  # MAISI reports the 2.5D FID of each plane; the mean is theirs too
            d = real.shape[1] // planes
            per_plane = {
                plane: distribution.frechet_distance(real[:, i * d : (i + 1) * d], fake[:, i * d : (i + 1) * d])
                for i, plane in enumerate(PLANES)
            }
            run.results[f"fd_{tag}_planes"] = {**per_plane, "mean": float(np.mean(list(per_plane.values())))}
        n_min, dims = min(real.shape[0], fake.shape[0]), real.shape[1]
        if n_min <= dims:
            run.warnings.append(
                f"FD ({tag}) from {n_min} samples of {dims}-d features: the covariances are singular and FD is "
                "biased upward; compare FDs only at equal sample sizes (the floor is computed at the same sizes)"
            )
        sets = _floor_sets(run, "fd", tag)
        if sets is not None:
            ref, other, gen = sets
            floor = distribution.frechet_distance(ref, other)
            run.results[f"fd_{tag}_floor"] = floor_entry(distribution.frechet_distance(ref, gen), floor, "lower")
        _separation(run, tag)
    scored = {t: s["ratio"] for t, s in run.separation.items() if isinstance(s, dict) and s["ratio"] is not None}
    if scored:
        run.separation["most_discriminative"] = max(scored, key=scored.get)


def _separation(run: EvaluationRun, tag: str) -> None:
    if len(run.real.images) < 4 or len(run.fake.images) < 2:
        return  # two halves of at least 2 (a covariance each)
    plan = run.floor if run.floor is not None and run.floor.reference == "split_half" else None
    run.separation[tag] = separation(run.real.features[tag], run.fake.features[tag], run.options["seed"], plan)


@SET_METRICS.register("kid")
def _kid(run: EvaluationRun) -> None:
    size, subsets, seed = run.options["kid_subset_size"], run.options["kid_subsets"], run.options["seed"]
    for tag in run.tags:
        real, fake = run.real.features[tag], run.fake.features[tag]
        mean, std = distribution.kid(real, fake, size, subsets, seed=seed)
        used = min(size, real.shape[0], fake.shape[0])
        run.results[f"kid_{tag}"] = {"mean": mean, "std": std, "subset_size": used, "subsets": subsets}
        sets = _floor_sets(run, "kid", tag)
        if sets is not None:
            ref, other, gen = sets
            floor, floor_std = distribution.kid(ref, other, size, subsets, seed=seed)
            generated, generated_std = distribution.kid(ref, gen, size, subsets, seed=seed)
            run.results[f"kid_{tag}_floor"] = floor_entry(
                generated, floor, "lower", generated_std=generated_std, floor_std=floor_std,
                subset_size=min(size, len(ref), len(other)),
            )  # fmt: skip


_PRDC_BETTER = {"precision": "higher", "recall": "higher", "density": "one", "coverage": "higher"}


@SET_METRICS.register("prdc")
def _prdc(run: EvaluationRun) -> None:
    k = run.options["nearest_k"]
    for tag in run.tags:
        for key, value in distribution.prdc(run.real.features[tag], run.fake.features[tag], nearest_k=k).items():
            run.results[f"{key}_{tag}"] = value
        sets = _floor_sets(run, "prdc", tag)
        if sets is not None:
            ref, other, gen = sets
            floor = distribution.prdc(ref, other, nearest_k=k)
            generated = distribution.prdc(ref, gen, nearest_k=k)
            for key, better in _PRDC_BETTER.items():
                run.results[f"{key}_{tag}_floor"] = floor_entry(generated[key], floor[key], better)
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
    sets = _floor_sets(run, "intensity", None)
    if sets is not None:
        ref, other, gen = sets
        floor = distribution.wasserstein_1d(ref, other)
        run.results["intensity_w1_floor"] = floor_entry(
            distribution.wasserstein_1d(ref, gen), floor, "lower", units=run.options["units"]
        )


@SET_METRICS.register("memorization")
def _memorization(run: EvaluationRun) -> None:
    names = {role: [d.images.name(i) for i in range(len(d.images))] for role, d in (("real", run.real),
                                                                                   ("train", run.train))}  # fmt: skip
    for tag in run.tags:
        result = memorization(
            run.fake.features[tag], run.train.features[tag], run.real.features[tag],
            run.fake.pixels, run.train.pixels, run.real.pixels,
            heldout_names=names["real"], train_names=names["train"],
        )  # fmt: skip
        run.memorization[tag] = result
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
        run.results[f"memorization_{tag}"] = summary
        run.warnings += [w for w in result.warnings if w not in run.warnings]  # pixel warnings repeat per tag


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
