"""Deterministic preprocessing for training data: load, resample to a spacing, window to [-1, 1].

`LoadScand` is a MONAI-style dictionary transform, so MONAI's `CacheDataset` and
`PersistentDataset` can cache its (expensive, deterministic) output. Windowing is a cheap
affine map applied per sample afterwards, recorded so that outputs go back to physical units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Transform
from torch import Tensor

from medgan.errors import InputError
from medgan.io.image import affine_of, meta_of

__all__ = ["LoadScand", "from_unit", "resample", "spacing_of", "target_spacing", "to_unit"]


def spacing_of(affine: np.ndarray, spatial_dims: int) -> list[float]:
    """Voxel size (mm) along each array axis: the lengths of the affine's columns."""
    return [float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :spatial_dims], axis=0)]


def target_spacing(
    spacing_mm: Sequence[float], wanted_mm: Sequence[float] | None, train_dims: int, slice_axis: int
) -> list[float]:
    """The spacing an image is resampled to. A 3D scan feeding 2D training keeps its slice axis."""
    if wanted_mm is None:
        return list(spacing_mm)
    if len(spacing_mm) == 3 and train_dims == 2:
        in_plane = iter(wanted_mm)
        return [spacing_mm[a] if a == slice_axis else next(in_plane) for a in range(3)]
    return list(wanted_mm)


def resample(array: Tensor, spacing_mm: Sequence[float], target_mm: Sequence[float], labels: bool = False) -> Tensor:
    """Resample `[C, *spatial]` to `target_mm`, one axis at a time.

    Shrinking averages over each new voxel's extent (no aliasing); growing interpolates
    linearly; label maps take the nearest label. The field of view is kept.
    """
    out = array.float() if not labels else array
    for axis, (old, new) in enumerate(zip(spacing_mm, target_mm, strict=True)):
        n = out.shape[1 + axis]
        size = max(1, round(n * old / new))
        if size == n:
            continue
        moved = out.movedim(1 + axis, -1)
        flat = moved.reshape(-1, 1, n)
        if labels:
            index = ((torch.arange(size) + 0.5) * n / size).long().clamp(max=n - 1)
            flat = flat[..., index]
        else:
            flat = F.interpolate(flat, size=size, mode="area" if size < n else "linear", align_corners=None)
        out = flat.reshape(*moved.shape[:-1], size).movedim(-1, 1 + axis)
    return out


def to_unit(x: Tensor, low: float, high: float) -> Tensor:
    """Physical units in [low, high] -> [-1, 1], clipped."""
    return ((x.float() - low) / (high - low) * 2.0 - 1.0).clamp(-1.0, 1.0)


def from_unit(x: Tensor, low: float, high: float) -> Tensor:
    """Inverse of `to_unit`: [-1, 1] -> physical units."""
    return (x.float().clamp(-1.0, 1.0) + 1.0) / 2.0 * (high - low) + low


class LoadScand(Transform):
    """Read each image key of a record (`medgan.io.read_image`) and resample it to a target spacing.

    Image keys become float32 tensors `[C, *spatial]` in physical units (`label_map` stays integer,
    resampled by nearest label) and `<key>_meta` holds the new RAS affine (nested lists), modality
    and units: plain data, so MONAI's `PersistentDataset` stores it on disk as it is. The
    record's other keys (a class `label`) pass through.
    """

    def __init__(
        self,
        image_keys: Sequence[str] = ("image",),
        spacing_mm: Sequence[float] | None = None,  # wanted spacing: in-plane for 2D training
        train_dims: int = 2,
        slice_axis: int = 2,
    ):
        self.image_keys = tuple(image_keys)
        self.spacing_mm = None if spacing_mm is None else list(spacing_mm)
        self.train_dims, self.slice_axis = train_dims, slice_axis

    def __call__(self, record: Mapping[str, Any]) -> dict[str, Any]:
        from medgan.io import read_image

        out = dict(record)
        for key in self.image_keys:
            if record.get(key) is None:
                continue
            image = read_image(record[key], series=record.get(f"{key}_series"))
            dims = image.ndim - 1
            if dims not in (2, 3):
                raise InputError(f"expected a 2D or 3D image, got shape {tuple(image.shape)}", path=record[key])
            if dims < self.train_dims:
                raise InputError(
                    "a 2D image cannot feed 3D training; set data.spatial_dims=2 or remove it", path=record[key]
                )
            affine = affine_of(image)
            spacing = spacing_of(affine, dims)
            target = target_spacing(spacing, self.spacing_mm, self.train_dims, self.slice_axis)
            is_labels = key == "label_map"
            array = image.as_tensor()
            array = resample(array.long() if is_labels else array.float(), spacing, target, labels=is_labels)
            directions = affine[:3, :dims] / np.asarray(spacing)
            new_affine = affine.copy()
            new_affine[:3, :dims] = directions * np.asarray(target)
            # Same field of view: the first voxel's centre moves by half the change in voxel size.
            new_affine[:3, 3] += directions @ (0.5 * (np.asarray(target) - np.asarray(spacing)))
            meta = meta_of(image)
            out[key] = array.contiguous()
            out[f"{key}_meta"] = {"affine": new_affine.tolist(), "modality": str(meta.get("modality") or ""),
                                  "units": str(meta.get("units") or ""), "source_spacing_mm": spacing}  # fmt: skip
        return out
