"""`medgan evaluate --real DIR --fake DIR`: score a generated set against real images.

    from medgan.metrics.evaluate import evaluate_sets
    result = evaluate_sets("real/", "fake/", "report/", train="train/", extractor="random_cnn")

Reads each set once (`medgan.metrics.collect`), computes the chosen set metrics
(`medgan.metrics.set_metrics`), and writes `metrics.json` and a self-contained `report.html` into
a new folder. Every feature-based number is keyed by the extractor's tag (`fd_random_cnn`,
`kid_efficientnet_lite0_2.5d`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medgan import __version__
from medgan.errors import ConfigError, InputError, MedganError
from medgan.io.atomic import check_apart, check_output
from medgan.metrics.collect import SetData, collect_set, progress_bar, skip_reason
from medgan.metrics.extractor import FeatureExtractor, check_option_types
from medgan.metrics.extractor_files import load_extractor_file
from medgan.metrics.features import EXTRACTORS, SLICES_PER_PLANE, FeatureAccumulator
from medgan.metrics.report import write_set_report
from medgan.metrics.set_metrics import FEATURE_METRICS, SET_METRICS, EvaluationRun, minimum_images, resolve_metrics
from medgan.metrics.sets import REPORT_APART, ImageSet, Window, choose_window, find_set, load_single, shape_text

__all__ = ["build_extractor", "evaluate_sets"]


def build_extractor(
    name: str, spatial_dims: int, mode: str = "auto", options: dict[str, Any] | None = None
) -> tuple[FeatureExtractor, str]:
    """The extractor for images of `spatial_dims`, and the mode: "native" or "2.5d".

    auto: 2D images go through a 2D extractor; 3D images through a 3D one when the extractor can
    be 3D (random_cnn, a file with spatial_dims=3), else as 2.5D.
    """
    options = dict(options or {})
    _check_options(name, options)
    if mode not in ("auto", "native", "2.5d"):
        raise ConfigError(f"feature mode must be auto, native or 2.5d; got {mode!r}")
    if mode == "2.5d" and spatial_dims != 3:
        raise ConfigError("2.5D scoring is for 3D images; these are 2D")
    if name == "file":
        dims = int(options.get("spatial_dims", 2))
        if dims == 3 and spatial_dims == 2:
            raise ConfigError("the extractor file takes 3D images (spatial_dims=3) but the images are 2D")
        chosen = "native" if dims == spatial_dims else "2.5d"
        if mode == "native" and chosen != "native":
            raise ConfigError("--mode native needs a 3D extractor file (--extractor-option spatial_dims=3)")
        if mode == "2.5d" and dims != 2:
            raise ConfigError("--mode 2.5d needs a 2D extractor file")
        return EXTRACTORS.build("file", **options), chosen
    three_d = name == "random_cnn"
    if mode == "native" and spatial_dims == 3 and not three_d:
        raise ConfigError(f"{name} is 2D only; score 3D images with --mode 2.5d (or auto)")
    chosen = "native" if spatial_dims == 2 or (three_d and mode != "2.5d") else "2.5d"
    dims = spatial_dims if chosen == "native" else 2
    return EXTRACTORS.build(name, spatial_dims=dims, **options), chosen


def _check_options(name: str, options: dict[str, Any]) -> None:
    """Unknown extractor options, or values of the wrong type, are one-line errors (not a TypeError)."""
    builder = load_extractor_file if name == "file" else EXTRACTORS.get(name)
    valid = [p for p in inspect.signature(builder).parameters if p != "spatial_dims" or name == "file"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for the {name} extractor (valid: {', '.join(valid) or 'none'})"
        )
    check_option_types(options)


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
    extractor: str = "random_cnn",
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
) -> dict[str, Any]:
    """Score the fake set against the real one (and the training set); write metrics.json and report.html."""
    names = resolve_metrics(metrics, train is not None)
    if FEATURE_METRICS & set(names):
        _check_options(extractor, dict(extractor_options or {}))  # before any image is read
    file_path = (extractor_options or {}).get("path") if extractor == "file" else None
    folders = [("real set", real), ("fake set", fake), ("training set", train), ("extractor file", file_path)]
    check_apart(out, folders, *REPORT_APART)  # --overwrite replaces --out: never an input
    check_output(out, overwrite)  # before minutes of work, not after
    sets = {"real": find_set(real, "real"), "fake": find_set(fake, "fake")}
    if "memorization" in names:  # the training set serves memorization only
        sets["train"] = find_set(train, "train")
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
    needs_features = bool(FEATURE_METRICS & set(names))
    net, chosen_mode = build_extractor(extractor, dims, mode, extractor_options) if needs_features else (None, None)
    tag = None if net is None else net.name + ("_2.5d" if chosen_mode == "2.5d" else "")
    slices = _slices_per_plane(slices_per_plane, names, dims, net, mode, chosen_mode)
    rng = np.random.default_rng(seed)
    data: dict[str, SetData] = {}
    with progress_bar(progress) as bar:
        for offset, (role, images) in enumerate(sets.items()):
            accumulator = FeatureAccumulator(net, chosen_mode, device, batch_size, slices) if net is not None else None
            wanted = min(len(images), 2 * diversity_pairs) if "diversity" in names else 0
            picks = np.sort(rng.choice(len(images), wanted, replace=False))
            data[role] = collect_set(images, win, dims, accumulator, picks, seed + offset, bar)
            if data[role].features is not None and str(device).startswith("cuda"):  # metrics on the GPU too
                data[role].features = torch.from_numpy(data[role].features).to(device)
    _check_counts(names, {role: d.images for role, d in data.items()}, nearest_k)  # after skipping unreadable ones
    run = EvaluationRun(
        real=data["real"],
        fake=data["fake"],
        train=data.get("train"),
        tag=tag,
        planes=3 if chosen_mode == "2.5d" else 1,
        options={
            "nearest_k": nearest_k,
            "kid_subset_size": kid_subset_size,
            "kid_subsets": kid_subsets,
            "diversity_pairs": diversity_pairs,
            "seed": seed,
            "units": "HU" if probes["real"][2] == "CT" else "image units",
        },
    )
    if chosen_mode == "2.5d":  # which slices are scored changes the 2.5D features
        run.options["slices_per_plane"] = slices
    run.warnings += skipped_metrics + _input_warnings(data)
    if train is not None and "train" not in data:
        run.warnings.append("the training set serves the memorization metric only, which was not asked for")
    for name in names:
        SET_METRICS.get(name)(run)
    record = _record(run, names, win, net, chosen_mode, device)
    write_set_report(out, record, run, overwrite=overwrite)
    return record


def _slices_per_plane(given: int | None, names, dims: int, net, mode: str, chosen_mode: str | None) -> int:
    """The slices per plane of a 2.5D run. Given to a run that takes no slices, the option is an error rather
    than silently ignored: switching to 2.5D because of it would change the extractor and every metric key."""
    if given is None:
        return SLICES_PER_PLANE
    if chosen_mode == "2.5d":
        if given < 0:
            raise ConfigError(f"--slices-per-plane must be 0 (every slice) or more; got {given}")
        return int(given)
    option = "--slices-per-plane applies to 2.5D scoring"
    if net is None:
        raise ConfigError(f"{option} of features; none of {', '.join(names)} uses features")
    if dims == 2:
        raise ConfigError(f"{option} of 3D images; these images are 2D")
    raise ConfigError(
        f"{option} only, and {net.name} scores these 3D images natively (--mode {mode}): add --mode 2.5d to "
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


def _record(run: EvaluationRun, names, window: Window, net, mode, device) -> dict[str, Any]:
    def describe(d: SetData) -> dict:
        return {
            "folder": d.images.folder,
            "count": len(d.images),
            "spatial_dims": d.spatial_dims,
            "shapes": dict(d.shapes),
            "skipped": list(d.images.skipped),  # unreadable files, with the reason
        }

    record: dict[str, Any] = {
        "medgan_version": __version__,
        "kind": "sets",
        "metrics_computed": list(names),
        "inputs": {
            role: describe(d) for role, d in (("real", run.real), ("fake", run.fake), ("train", run.train)) if d
        },
        "normalisation": window.record(),
        "metrics": run.results,
        "options": run.options,
        "warnings": run.warnings,
    }
    if net is not None:
        record["extractor"] = {
            "name": net.name,
            "tag": run.tag,
            "mode": mode,
            "input_size": list(net.input_size),
            # everything else that changes the features: input = (x01 - input_mean) / input_std, channels repeated
            "in_channels": int(net.in_channels),
            "input_mean": float(net.input_mean),
            "input_std": float(net.input_std),
            "feature_dim": int(run.real.features.shape[1]),
            "device": str(device),
            **net.provenance,
        }
        if mode == "2.5d":
            record["extractor"]["slices_per_plane"] = run.options["slices_per_plane"] or "all"
    return record
