"""`medgan evaluate --real DIR --fake DIR`: score a generated set against real images.

    from medgan.metrics.evaluate import evaluate_sets
    result = evaluate_sets("real/", "fake/", "report/", train="train/", extractor="random_cnn")

Reads each set once (`medgan.metrics.collect`), with every installed offline extractor side by
side unless told which, computes the chosen set metrics and their real-vs-real floors
(`medgan.metrics.set_metrics`, `medgan.metrics.floors`), and writes `metrics.json` and a
self-contained `report.html` into a new folder, both leading with the summary of
`medgan.metrics.summary`. Every feature-based number is keyed by the extractor's tag
(`fd_random_cnn`, `kid_efficientnet_lite0_2.5d`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medgan import __version__
from medgan.errors import ConfigError, InputError, MedganError
from medgan.io.atomic import check_apart, check_output
from medgan.metrics.collect import SetData, collect_set, progress_bar, skip_reason
from medgan.metrics.extractor import FeatureExtractor
from medgan.metrics.extractor_choice import build_extractors, choose_extractors
from medgan.metrics.features import SLICES_PER_PLANE, FeatureAccumulator
from medgan.metrics.floors import plan_floor
from medgan.metrics.report import write_set_report
from medgan.metrics.set_metrics import (
    FEATURE_METRICS,
    FLOOR_METRICS,
    SET_METRICS,
    EvaluationRun,
    minimum_images,
    resolve_metrics,
)
from medgan.metrics.sets import REPORT_APART, ImageSet, Window, choose_window, find_set, load_single, shape_text
from medgan.metrics.summary import nearest_training, summarise

__all__ = ["evaluate_sets"]


def _probe(images: ImageSet) -> tuple[int, str, str | None]:
    """Dimensions, shape and modality of the set's first readable image (unreadable ones are skipped
    later, during the pass over the set)."""
    problems = []
    for index, item in enumerate(images.items):
        try:
            array, modality = load_single(item, images.role)
        except MedganError as err:
            problems.append(skip_reason(images, index, err))
            continue
        return array.ndim, shape_text(array.shape), modality
    raise InputError(
        f"none of the {len(images)} images of the {images.role} set is readable, e.g. {problems[0]}",
        path=images.folder,
    )


def _check_counts(names: Sequence[str], sets: dict[str, ImageSet], nearest_k: int) -> None:
    """Every metric asked for must have enough images; the message says which of them can run."""
    short = []  # (metric, minimum, role)
    for name in names:
        minimum = minimum_images(name, nearest_k)
        roles = ("real", "fake") if name != "memorization" else ("real", "fake", "train")
        role = next((r for r in roles if len(sets[r]) < minimum), None)
        if role is not None:
            short.append((name, minimum, role))
    if not short:
        return
    name, minimum, role = short[0]
    skipped = sets[role].skipped
    after = f" readable (skipped {len(skipped)}, e.g. {skipped[0]})" if skipped else ""
    others = ", ".join(f"{n} {m}" for n, m, _ in short[1:])
    fitting = [n for n in names if n not in {s[0] for s in short}]
    advice = f"; these fit: --metrics {','.join(fitting)}" if fitting else "; add images"
    raise InputError(
        f"{name} needs at least {minimum} images per set{f' ({others})' if others else ''}; the {role} set has "
        f"{len(sets[role])}{after}{advice}",
        path=sets[role].folder,
    )


def evaluate_sets(
    real: str | os.PathLike,
    fake: str | os.PathLike,
    out: str | os.PathLike,
    train: str | os.PathLike | None = None,
    metrics: Sequence[str] | None = None,  # names in SET_METRICS; default: all that apply
    extractor: str | Sequence[str] | None = None,  # name(s) in EXTRACTORS; None: every installed offline one
    extractor_options: dict[str, Any] | None = None,
    mode: str = "auto",  # auto, native or 2.5d (3D images through a 2D extractor)
    window: tuple[float, float] | None = None,  # intensity window (physical units) mapped to [0, 1]
    device: str = "cpu",
    batch_size: int = 32,
    slices_per_plane: int | None = None,  # 2.5D only: slices per plane and volume (0: all; None: 32)
    nearest_k: int = 5,  # precision/recall/density/coverage neighbourhood size
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    diversity_pairs: int = 100,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    real_b: str | os.PathLike | None = None,  # a second real set for the real-vs-real floor
) -> dict[str, Any]:
    """Score the fake set against the real one (and the training set); write metrics.json and report.html.

    Every distribution metric also gets its real-vs-real floor at the same sample sizes: `real_b` against
    the real set, else the training set against it, else two halves of the real set (`medgan.metrics.floors`).
    """
    names = resolve_metrics(metrics, train is not None)
    needs_features = bool(FEATURE_METRICS & set(names))
    choices = choose_extractors(extractor, extractor_options) if needs_features else []
    floors = bool(FLOOR_METRICS & set(names))
    if real_b is not None and not floors:
        raise ConfigError(f"--real-b serves the real-vs-real floors of {', '.join(sorted(FLOOR_METRICS))}; "
                          f"none of them was asked for (--metrics {','.join(names)})")  # fmt: skip
    file_path = next((o.get("path") for n, o in choices if n == "file"), None)
    folders = [("real set", real), ("fake set", fake), ("training set", train), ("second real set", real_b),
               ("extractor file", file_path)]  # fmt: skip
    check_apart(out, folders, *REPORT_APART)  # --overwrite replaces --out: never an input
    check_output(out, overwrite)  # before minutes of work, not after
    sets = {"real": find_set(real, "real"), "fake": find_set(fake, "fake")}
    if train is not None and ("memorization" in names or (floors and real_b is None)):
        sets["train"] = find_set(train, "train")
    if real_b is not None:
        sets["real_b"] = find_set(real_b, "real_b")
    every_image = ((f"{role} image", item.source) for role, s in sets.items() for item in s.items)
    check_apart(out, every_image, *REPORT_APART)  # images reached through links
    probes = {role: _probe(images) for role, images in sets.items()}
    dims = probes["real"][0]
    for role, (d, shape, _) in probes.items():
        if d != dims:
            raise InputError(
                f"the real images are {dims}D ({probes['real'][1]}) but the {role} images are {d}D ({shape}); "
                "both sets must have the same number of spatial dimensions"
            )
    _check_counts(names, sets, nearest_k)
    skipped_metrics = []
    if "diversity" in names:  # MS-SSIM needs its 11-voxel window along every axis
        small = [(role, shape) for role, (_, shape, _) in probes.items() if min(map(int, shape.split("x"))) < 11]
        if small:
            role, shape = small[0]
            reason = f"MS-SSIM diversity needs images of at least 11 voxels a side; the {role} images are {shape}"
            if metrics:  # asked for by name: an error, before minutes of work
                raise InputError(reason, path=sets[role].folder)
            names = [n for n in names if n != "diversity"]
            skipped_metrics.append(f"diversity not computed: {reason}")
    win = choose_window(window, probes["real"][2], sets["real"])
    nets, left_out = build_extractors(choices, dims, mode, automatic=extractor is None)
    slices = _slices_per_plane(slices_per_plane, names, dims, nets, mode)
    rng = np.random.default_rng(seed)
    data: dict[str, SetData] = {}
    with progress_bar(progress) as bar:
        for offset, (role, images) in enumerate(sets.items()):
            accumulators = {tag: FeatureAccumulator(net, chosen, device, batch_size, slices)
                            for tag, (net, chosen) in nets.items()}  # fmt: skip
            wanted = min(len(images), 2 * diversity_pairs) if "diversity" in names and role in ("real", "fake") else 0
            picks = np.sort(rng.choice(len(images), wanted, replace=False))
            data[role] = collect_set(images, win, dims, accumulators, picks, seed + offset, bar)
            if str(device).startswith("cuda"):  # metrics on the GPU too
                data[role].features = {t: torch.from_numpy(f).to(device) for t, f in data[role].features.items()}
    _check_counts(names, {role: d.images for role, d in data.items()}, nearest_k)  # after skipping unreadable ones
    run = EvaluationRun(
        real=data["real"],
        fake=data["fake"],
        train=data.get("train"),
        real_b=data.get("real_b"),
        tags=list(nets),
        planes={tag: 3 if chosen == "2.5d" else 1 for tag, (_, chosen) in nets.items()},
        options={
            "nearest_k": nearest_k,
            "kid_subset_size": kid_subset_size,
            "kid_subsets": kid_subsets,
            "diversity_pairs": diversity_pairs,
            "seed": seed,
            "units": "HU" if probes["real"][2] == "CT" else "image units",
        },
    )
    if floors:
        reference = "real_b" if run.real_b is not None else "train" if run.train is not None else "split_half"
        other = {"real_b": run.real_b, "train": run.train}.get(reference)
        n_other = None if other is None else len(other.images)
        run.floor = plan_floor(len(run.real.images), len(run.fake.images), n_other, reference, seed)
    if any(chosen == "2.5d" for _, chosen in nets.values()):  # which slices are scored changes the 2.5D features
        run.options["slices_per_plane"] = slices
    run.warnings += skipped_metrics + left_out + _input_warnings(data)
    if train is not None and "train" not in data:
        run.warnings.append(
            "the training set serves memorization and the floor (here from --real-b), neither of which applies"
        )
    for name in names:
        SET_METRICS.get(name)(run)
    record = _record(run, names, win, nets, device)
    write_set_report(out, record, run, overwrite=overwrite)
    return record


def _slices_per_plane(given: int | None, names, dims: int, nets: dict, mode: str) -> int:
    """The slices per plane of a 2.5D run. Given to a run that takes no slices, the option is an error rather
    than silently ignored: switching to 2.5D because of it would change the extractor and every metric key."""
    if given is None:
        return SLICES_PER_PLANE
    if any(chosen == "2.5d" for _, chosen in nets.values()):
        if given < 0:
            raise ConfigError(f"--slices-per-plane must be 0 (every slice) or more; got {given}")
        return int(given)
    option = "--slices-per-plane applies to 2.5D scoring"
    if not nets:
        raise ConfigError(f"{option} of features; none of {', '.join(names)} uses features")
    if dims == 2:
        raise ConfigError(f"{option} of 3D images; these images are 2D")
    which = ", ".join(net.name for net, _ in nets.values())
    raise ConfigError(
        f"{option} only, and {which} scores these 3D images natively (--mode {mode}): add --mode 2.5d to "
        "score them as slices in three planes, or leave the option out"
    )


def _input_warnings(data: dict[str, SetData]) -> list[str]:
    warnings = []
    for role, d in data.items():
        skipped = d.images.skipped
        if skipped:
            more = f" (and {len(skipped) - 5} more, listed in metrics.json)" if len(skipped) > 5 else ""
            warnings.append(f"{role} set: skipped {len(skipped)} unreadable file(s): {'; '.join(skipped[:5])}{more}")
    if set(data["real"].shapes) != set(data["fake"].shapes):  # d.shapes counts images by size
        real, fake = (_sizes(data[role].shapes) for role in ("real", "fake"))
        warnings.append(
            f"real images are {real} but fake images are {fake}: all are resized to the extractor's input, so the "
            "metrics partly measure the resizing"
        )
    return warnings


def _sizes(counts) -> str:
    """'180x186' for one size; '180x186 (30), 181x217 (5) and 2 more sizes' for several, commonest first."""
    common = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(common) == 1:
        return common[0][0]
    shown = ", ".join(f"{shape} ({n})" for shape, n in common[:3])
    return shown + (f" and {len(common) - 3} more sizes" if len(common) > 3 else "")


def _record(run: EvaluationRun, names, window: Window, nets: dict, device) -> dict[str, Any]:
    def describe(d: SetData) -> dict:
        return {
            "folder": d.images.folder,
            "count": len(d.images),
            "spatial_dims": d.spatial_dims,
            "shapes": dict(d.shapes),
            "skipped": list(d.images.skipped),  # unreadable files, with the reason
        }

    roles = (("real", run.real), ("fake", run.fake), ("train", run.train), ("real_b", run.real_b))
    record: dict[str, Any] = {
        "medgan_version": __version__,
        "kind": "sets",
        "metrics_computed": list(names),
        "inputs": {role: describe(d) for role, d in roles if d},
        "normalisation": window.record(),
        "metrics": run.results,
        "options": run.options,
        "warnings": run.warnings,
    }
    if nets:
        extractors = {tag: _describe_extractor(run, tag, net, chosen, device) for tag, (net, chosen) in nets.items()}
        record["extractor"] = extractors[run.tag]  # the first: what a run with one extractor describes
        record["extractors"] = extractors
    if run.floor is not None:
        record["floor"] = run.floor.record(len(run.fake.images))
    if run.separation:
        record["extractor_separation"] = run.separation
    record["summary"] = summarise(run.results, run.separation, record.get("floor"), run.tags)
    leading = record["summary"]["extractor"]
    if leading in run.memorization:
        record["nearest_training"] = nearest_training(run, leading)
    return record


def _describe_extractor(run: EvaluationRun, tag: str, net: FeatureExtractor, mode: str, device) -> dict[str, Any]:
    described = {
        "name": net.name,
        "tag": tag,
        "mode": mode,
        "input_size": list(net.input_size),
        # everything else that changes the features: input = (x01 - input_mean) / input_std, channels repeated
        "in_channels": int(net.in_channels),
        "input_mean": float(net.input_mean),
        "input_std": float(net.input_std),
        "feature_dim": int(run.real.features[tag].shape[1]),
        "device": str(device),
        **net.provenance,
    }
    if mode == "2.5d":
        described["slices_per_plane"] = run.options["slices_per_plane"] or "all"
    return described
