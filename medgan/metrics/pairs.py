"""`medgan evaluate --pairs CSV`: paired metrics for enhancement (denoising, super-resolution, ...).

The CSV has a header with the columns `reference` and `test`, and optionally `mask` (nonzero
voxels are scored); paths are relative to the CSV's folder. The test image and the mask must lie
on the reference's voxel grid; one stored in another voxel order is reordered onto it exactly
(`medgan.metrics.grid`, with `medgan.io.geometry.compare_grids`), any other grid is refused.

    reference,test,mask
    clean/case01.nii.gz,enhanced/case01.nii.gz,masks/case01.nii.gz

Intensities are compared in physical units. `data_range` is explicit: give it, or a window
(images are clipped to it and data_range = high - low); CT defaults to the scanner range
(-1024, 3071) HU, data_range 4095. MS-SSIM uses as many of its five scales as the image allows.
"""

from __future__ import annotations

import csv
import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medgan import __version__
from medgan.errors import ConfigError, InputError
from medgan.io.atomic import check_apart, check_output
from medgan.io.geometry import GridMismatch
from medgan.metrics.collect import VIEW_SIDE
from medgan.metrics.extractor import resize
from medgan.metrics.grid import Grid, align
from medgan.metrics.image import PAIRED_METRICS, max_ms_ssim_scales, ms_ssim, ms_ssim_weights
from medgan.metrics.sets import REPORT_APART, load_with_affine, shape_text, squeeze

__all__ = ["CT_SCANNER_RANGE_HU", "DEFAULT_PAIRED_METRICS", "PairViews", "evaluate_pairs", "read_pairs", "summary_line"]

CT_SCANNER_RANGE_HU = (-1024.0, 3071.0)
DEFAULT_PAIRED_METRICS = ("psnr", "ssim", "ms_ssim", "mae", "rmse", "nrmse")
_UNITLESS = {"psnr": "dB", "ssim": "", "ms_ssim": "", "nrmse": ""}


@dataclass
class PairViews:
    """Middle-slice thumbnails of one pair for the report (uint8)."""

    name: str
    reference: np.ndarray
    test: np.ndarray
    difference: np.ndarray


def read_pairs(csv_path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of the pairs CSV as {"line", "reference", "test", "mask"} with paths resolved; checked."""
    csv_path = os.fspath(csv_path)
    if not os.path.isfile(csv_path):
        raise InputError("no such pairs file", path=csv_path)
    base = os.path.dirname(os.path.abspath(csv_path))
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "reference" not in columns or "test" not in columns:
            raise InputError(
                f"needs the header columns reference and test (found: {', '.join(columns) or 'none'})", path=csv_path
            )
        rows = []
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not any(row.values()):
                continue
            line = reader.line_num
            entry = {"line": line}
            for column in ("reference", "test", "mask"):
                value = row.get(column, "")
                if not value:
                    if column == "mask":
                        entry["mask"] = None
                        continue
                    raise InputError(f"line {line}: the {column} path is empty", path=csv_path)
                path = value if os.path.isabs(value) else os.path.join(base, value)
                if not os.path.exists(path):
                    raise InputError(f"line {line}: {column} {value} does not exist", path=csv_path)
                entry[column] = path
            rows.append(entry)
    if not rows:
        raise InputError("lists no pairs", path=csv_path)
    return rows


def _on_grid(row, column, reference: Grid, shape, moved: list[str], pairs_csv) -> np.ndarray:
    """The row's `column` image on the reference's voxel grid (see `medgan.metrics.grid`), unit axes
    dropped like the reference's; one line naming both files and grids when it is another grid."""
    array, _, affine = load_with_affine(row[column], column)
    grid = Grid.of(array.shape, affine)
    where, name = f"line {row['line']}", os.path.basename(row[column])
    ref_name = os.path.basename(row["reference"])
    try:
        aligned, reordered = align(array, grid, reference)
    except GridMismatch as err:
        if reference.shape != grid.shape and sorted(reference.shape) != sorted(grid.shape):
            sizes = [shape_text([n for n in s if n > 1]) for s in (shape, array.shape)]
            detail = f"{where}: reference {ref_name} is {sizes[0]} but {column} {name} is {sizes[1]}"
        else:
            detail = (
                f"{where}: {column} {name} is not on the voxel grid of reference {ref_name} ({err}): "
                f"reference {reference.describe()}; {column} {grid.describe()}; resample it onto the reference first"
            )
        raise InputError(detail, path=os.fspath(pairs_csv)) from None
    if reordered:
        moved.append(f"{where}: {column} {name} ({grid.codes}) onto reference {ref_name} ({reference.codes})")
    return squeeze(aligned.reshape(shape), row[column])


def _range(window, data_range, modality) -> tuple[tuple[float, float] | None, float, str]:
    if window is not None:
        low, high = (float(v) for v in window)
        if not high > low:
            raise ConfigError(f"the window needs low < high; got {low}, {high}")
        return (low, high), high - low, "window given by the user"
    if data_range is not None:
        if not float(data_range) > 0:
            raise ConfigError(f"data_range must be positive; got {data_range}")
        return None, float(data_range), "data_range given by the user"
    if modality == "CT":
        low, high = CT_SCANNER_RANGE_HU
        return CT_SCANNER_RANGE_HU, high - low, "CT default: scanner range (-1024, 3071) HU"
    raise ConfigError(
        "give --data-range (or --window LOW,HIGH): the modality is not recorded as CT (a JSON sidecar or DICOM "
        "says it), so the intensity range is unknown"
    )


def evaluate_pairs(
    pairs_csv: str | os.PathLike,
    out: str | os.PathLike,
    metrics: Sequence[str] | None = None,  # names in PAIRED_METRICS; default: all
    data_range: float | None = None,  # width of the intensity range, physical units
    window: tuple[float, float] | None = None,  # clip both images to (low, high); data_range = high - low
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Paired metrics for every row of `pairs_csv`; writes metrics.json and report.html into `out`."""
    from medgan.metrics.collect import progress_bar
    from medgan.metrics.report import write_pairs_report

    names = list(metrics or DEFAULT_PAIRED_METRICS)
    for name in names:
        PAIRED_METRICS.get(name)
    rows = read_pairs(pairs_csv)
    listed = [
        (f"{column} of line {row['line']}", row[column]) for row in rows for column in ("reference", "test", "mask")
    ]
    check_apart(out, [("pairs file", pairs_csv), *listed], *REPORT_APART)  # --overwrite replaces --out: never an input
    check_output(out, overwrite)
    per_pair, views, notes, reordered = [], [], [], []
    clip = span = source = None
    with progress_bar(progress) as bar:
        task = bar.add_task("pairs", total=len(rows))
        for row in rows:
            where = f"line {row['line']}"
            reference, modality, affine = load_with_affine(row["reference"], "reference")
            grid = Grid.of(reference.shape, affine)
            test = _on_grid(row, "test", grid, reference.shape, reordered, pairs_csv)
            mask = None
            if row["mask"]:
                mask = _on_grid(row, "mask", grid, reference.shape, reordered, pairs_csv) != 0
                if not mask.any():
                    raise InputError(f"{where}: the mask is empty", path=os.fspath(pairs_csv))
            reference = squeeze(reference, row["reference"])
            if span is None:
                clip, span, source = _range(window, data_range, modality)
            reference, test = reference.astype(np.float64), test.astype(np.float64)  # reference-grade sums
            if clip is not None:
                reference, test = np.clip(reference, *clip), np.clip(test, *clip)
            scores = {"reference": row["reference"], "test": row["test"], "mask": row["mask"]}
            scores.update(_score(names, reference, test, mask, span, notes, where))
            per_pair.append(scores)
            views.append(_views(os.path.basename(row["test"]), reference, test, clip, span))
            bar.advance(task)
    if reordered:  # same grid in another voxel order: fine, but say so once
        shown = "; ".join(reordered[:3]) + ("; ..." if len(reordered) > 3 else "")
        notes.insert(
            0,
            f"{len(reordered)} image(s) stored in another voxel order than their reference were reordered onto it "
            f"(same physical grid, no interpolation): {shown}",
        )
    record = {
        "medgan_version": __version__,
        "kind": "pairs",
        "pairs_file": os.fspath(pairs_csv),
        "data_range": span,
        "clip_window": list(clip) if clip else None,
        "range_source": source,
        "metrics_computed": names,
        "summary": _summarise(names, per_pair),
        "pairs": per_pair,
        "warnings": notes,
    }
    write_pairs_report(out, record, views, overwrite=overwrite)
    return record


def _score(names, reference, test, mask, span, notes, where) -> dict[str, Any]:
    scores = {}
    for name in names:
        if name == "ms_ssim":
            scales = max_ms_ssim_scales(reference.shape)
            if scales == 0:
                notes.append(f"{where}: too small for MS-SSIM (needs 11 voxels a side)")
                scores[name] = None
                continue
            value = ms_ssim(reference, test, span, mask=mask, weights=ms_ssim_weights(scales))
            scores["ms_ssim_scales"] = scales
        else:
            function = PAIRED_METRICS.get(name)
            options = {"data_range": span} if "data_range" in inspect.signature(function).parameters else {}
            value = function(reference, test, mask=mask, **options)
        scores[name] = float(value)
        if name in ("ssim", "ms_ssim") and np.isnan(scores[name]) and mask is not None:
            notes.append(
                f"{where}: {name} is NaN: the mask has no voxel where the 11-voxel SSIM window fits "
                "(it lies within 5 voxels of the image border); the pair is left out of the mean"
            )
    return scores


def _summarise(names, per_pair) -> dict[str, Any]:
    """Mean and std over the pairs with a finite value (`finite` of `pairs`); median, min and max over
    all but NaN values (identical images give PSNR = +inf); `infinite` and `nan` counted apart."""
    summary = {}
    for name in names:
        values = np.array([p[name] for p in per_pair if p.get(name) is not None], dtype=float)
        if not values.size:
            continue
        finite, ordered = values[np.isfinite(values)], values[~np.isnan(values)]
        summary[name] = {
            "mean": float(finite.mean()) if finite.size else None,
            "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
            "median": float(np.median(ordered)) if ordered.size else None,
            "min": float(ordered.min()) if ordered.size else None,
            "max": float(ordered.max()) if ordered.size else None,
            "pairs": int(values.size),
            "finite": int(finite.size),  # the pairs the mean and std cover
            "infinite": int(np.isinf(values).sum()),
            "nan": int(np.isnan(values).sum()),
            "units": _UNITLESS.get(name, "image units (HU for CT)"),
        }
    return summary


def summary_line(stats: dict[str, Any]) -> str:
    """`mean ± std over F of N pairs (median M; I infinite, K NaN)`, for the terminal."""
    if stats["mean"] is None:
        text = f"no finite value in {stats['pairs']} pairs"
    else:
        text = f"{stats['mean']:.6g} ± {stats['std']:.2g} over {stats['finite']} of {stats['pairs']} pairs"
    extra = [f"median {stats['median']:.6g}"] if stats["median"] is not None else []
    extra += [f"{stats[key]} {label}" for key, label in (("infinite", "infinite"), ("nan", "NaN")) if stats[key]]
    return f"{text} ({'; '.join(extra)})" if extra else text


def _views(name, reference, test, clip, span) -> PairViews:
    low = clip[0] if clip else float(reference.min())

    def thumb(a: np.ndarray) -> np.ndarray:
        plane = a[..., a.shape[-1] // 2] if a.ndim == 3 else a
        small = resize(torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))[None, None], (VIEW_SIDE,) * 2)
        return (small[0, 0].T.clamp(0, 1) * 255).round().to(torch.uint8).numpy()

    # Differences are shown 4x amplified: a 10% error of the range is already bright.
    return PairViews(
        name, thumb((reference - low) / span), thumb((test - low) / span), thumb(np.abs(reference - test) * 4.0 / span)
    )
