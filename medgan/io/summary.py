"""One dictionary per image: what `medgan info` prints (no patient identity, ever)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medgan.io import FoundImage
from medgan.io.geometry import orientation_code, spacing_mm
from medgan.io.image import affine_of, array_of

__all__ = ["summarize"]


def summarize(found: FoundImage, pixels: bool = True, allow_gaps: bool = False) -> dict[str, Any]:
    """Format, modality, shape, spacing (mm), orientation, origin (RAS mm), range, series UID, slices.

    With `pixels=False`, DICOM series are described from their headers alone (no range).
    """
    if found.series is not None and not pixels:
        layout = found.series.geometry(allow_gaps)
        shape, affine, dtype, value_range = tuple(layout.shape), layout.affine, None, None
        channels = len(layout.clusters[0]) * found.series.frames[0].file.samples_per_pixel
        warnings = list(layout.warnings)
        modality = found.series.modality
    else:
        image = found.load(allow_gaps=allow_gaps)
        array = array_of(image)
        channels, shape = array.shape[0], tuple(array.shape[1:])
        affine, dtype = affine_of(image), str(array.dtype)
        value_range = [_number(array.min()), _number(array.max())] if array.size else None
        meta = image.meta
        warnings = list(meta.get("warnings", []))
        modality = meta.get("modality", "")
    spatial = len(shape)
    record: dict[str, Any] = {
        "path": found.source,
        "format": found.format,
        "modality": modality or None,
        "shape": list(shape),
        "channels": int(channels),
        "spacing_mm": [round(float(v), 6) for v in spacing_mm(affine)[:spatial]],
        "orientation": orientation_code(affine)[:spatial] if spatial == 3 else orientation_code(affine)[:2],
        "origin_mm": [round(float(v), 6) for v in affine[:3, 3]],
        "dtype": dtype,
        "range": value_range,
        "series_uid": None,
        "slices": int(shape[2]) if spatial == 3 else 1,
    }
    if found.series is not None:
        series = found.series
        record["series_uid"] = series.uid
        if series.key != series.uid:
            record["series_key"] = series.key
        record["description"] = series.attributes.get("SeriesDescription")
        record["files"] = len(series.files)
    if warnings:
        record["warnings"] = warnings
    return record


def _number(value) -> float | int:
    value = value.item() if hasattr(value, "item") else value
    return int(value) if float(value).is_integer() and np.isfinite(value) else round(float(value), 6)
