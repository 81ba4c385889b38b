"""Degrade one scan (a MetaTensor `[C, *spatial]` with a RAS affine): the geometry-aware entry point.

`degrade_image` builds the degradation, reads the spacing and the slice axis from the affine, draws a
record from the seed (or replays a given one), applies it and returns a new MetaTensor on the
output grid (resolution kinds change it) with the record in its metadata.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import medgan
from medgan.data.degradations.registry import DEGRADATIONS
from medgan.errors import ConfigError, InputError
from medgan.io.geometry import spacing_mm
from medgan.io.image import affine_of, make_image, meta_of

__all__ = ["degrade_image", "slice_axis_of"]

_AXIS_PARAMS = ("slice_axis", "axis")  # parameters naming the axis across slices, filled from the geometry
_MONAI_KEYS = ("affine", "original_affine", "spatial_shape", "original_channel_dim", "space")


def slice_axis_of(affine: np.ndarray, spatial_dims: int, shape=None) -> int:
    """The axis across the slices of a volume: a single-slice axis, else the coarsest one; among equally
    coarse axes (within 1%), the one closest to the body's long (superior) axis."""
    if shape is not None and sum(n == 1 for n in shape) == 1:
        return list(shape).index(1)
    spacing = np.asarray(spacing_mm(affine)[:spatial_dims])
    coarse = [a for a in range(spatial_dims) if spacing[a] >= spacing.max() * 0.99]
    return max(coarse, key=lambda a: abs(affine[2, a]) / spacing[a])


def _check_modality(kind: str, image, path: str | None) -> None:
    modality = str(meta_of(image).get("modality") or "").upper()
    if kind.startswith("ct-") and modality and modality != "CT":
        raise InputError(f"{kind} needs a CT in HU, but the image's modality is {modality}", path=path)
    if kind.startswith("mr-") and modality == "CT":
        raise InputError(f"{kind} simulates MR acquisition, but the image is a CT", path=path)


def degrade_image(
    image,
    kind: str | None = None,  # a name in DEGRADATIONS (taken from `record` when replaying)
    seed: int = 0,  # draws the record (parameters within ranges, noise seed)
    severity: float | tuple[float, float] | None = None,  # 0 mild .. 1 severe (default 0.5)
    record: dict | None = None,  # replay this record instead of drawing one
    path: str | None = None,  # named in error messages
    **params: Any,  # explicit physical parameters (override severity)
):
    """Degrade a MetaTensor scan; returns (degraded MetaTensor, record).

    Values stay in the input's units; integer inputs come back in their type when the result fits
    its range (rounded), else as float32. The record holds every parameter, the noise seed, the
    spacing and both grids' shapes, and replays exactly on the same device.
    """
    if record is not None:
        kind = record.get("kind")
        if kind not in DEGRADATIONS:
            raise ConfigError(DEGRADATIONS.unknown_message(str(kind)))
    elif kind is None:
        raise ConfigError(f"no degradation kind given (valid: {', '.join(DEGRADATIONS.names())})")
    cls = DEGRADATIONS.get(kind)
    dims = image.ndim - 1
    if dims not in (2, 3) or sorted(image.shape[1:])[-2] < 2:
        raise InputError(f"{kind} takes a 2D or 3D image with a plane of 2 voxels or more, got {tuple(image.shape)}",
                         path=path)  # fmt: skip
    _check_modality(kind, image, path)
    affine = affine_of(image)
    spacing = spacing_mm(affine)[:dims]
    if record is None:
        names = {p.name for p in cls.params}
        for name in _AXIS_PARAMS:
            if name in names and name not in params and dims == 3:
                params[name] = slice_axis_of(affine, dims, tuple(image.shape[1:]))
        degradation = cls(severity=severity, **params)
        record = degradation.sample(1, seed, spacing_mm=spacing)[0]
    else:
        degradation = cls()
        record = degradation.check_record(record)
    x = torch.as_tensor(image.as_tensor() if hasattr(image, "as_tensor") else image)[None]
    y = degradation.apply(x.float() if not x.dtype.is_floating_point else x, [record], spacing)[0]
    shape, new_affine = degradation.output_geometry(record, tuple(x.shape[2:]), affine, spacing)
    y = _output_dtype(y, x.dtype)
    record.update(
        {
            "spacing_mm": [round(s, 9) for s in spacing],
            "input_shape": list(x.shape[2:]),
            "output_shape": list(shape),
            "medgan_version": medgan.__version__,
        }
    )
    meta = {k: v for k, v in meta_of(image).items() if k not in _MONAI_KEYS}
    meta["degradation"] = record
    return make_image(y.cpu().numpy(), new_affine, meta), record


def _output_dtype(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Integer inputs come back as their type when the rounded values fit it; everything else as float32
    (float64 stays float64)."""
    if dtype.is_floating_point:
        return y.to(dtype if dtype == torch.float64 else torch.float32)
    info = torch.iinfo(dtype)
    rounded = y.round()
    if bool((rounded >= info.min).all() and (rounded <= info.max).all()):
        return rounded.to(dtype)
    return y.float()
