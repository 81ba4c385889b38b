"""Deterministic preprocessing for training data: load, pair by position, resample, window to [-1, 1].

`LoadScand` is a MONAI-style dictionary transform, so MONAI's `CacheDataset` and
`PersistentDataset` can cache its (expensive, deterministic) output. Windowing is a cheap
affine map applied per sample afterwards, recorded so that outputs go back to physical units.

Paired images (a pix2pix `source`, a `label_map`) are matched to the record's `image` by
physical position, never by array index: the same grid stored in another axis order or
direction (a DICOM series in LPS order beside a NIfTI in RAS order) is permuted and flipped
exactly; another grid is resampled onto the image's (nearest label for label maps, linear
for images) when the two fields of view overlap, and refused when they do not.
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
from medgan.io.geometry import (
    GridMismatch,
    compare_grids,
    describe_grid,
    full_affine,
    respaced_affine,
    spacing_mm,
)
from medgan.io.image import affine_of, meta_of

__all__ = [
    "LoadScand",
    "UnreadableScan",
    "from_unit",
    "onto_grid",
    "resample",
    "target_spacing",
    "to_unit",
]

_CHUNK_VOXELS = 1 << 22  # resampling works through the reference grid this many voxels at a time


class UnreadableScan(InputError):
    """A scan that cannot be read at all (missing, corrupt, not an image); a folder search skips it."""


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


def onto_grid(
    array: Tensor, affine: np.ndarray, shape: Sequence[int], reference_affine: np.ndarray, labels: bool = False
) -> Tensor | None:
    """`array` (`[C, *spatial]`, RAS `affine`) on the reference grid (`shape`, `reference_affine`).

    The same grid in another storage order (`medgan.io.geometry.compare_grids`) is permuted and
    flipped exactly (no interpolation); any other grid is resampled: nearest label for label maps,
    linear otherwise, voxels outside the array's field of view taking 0 (label maps) or the array's
    minimum. None when the two fields of view do not overlap at all.
    """
    try:
        return compare_grids(array.shape[1:], affine, shape, reference_affine).apply(array)
    except GridMismatch:
        pass
    dims = array.ndim - 1
    voxel_map = np.linalg.inv(full_affine(affine, dims)) @ full_affine(reference_affine, dims)  # reference -> array
    have, want = [*array.shape[1:], *[1] * (3 - dims)], [*shape, *[1] * (3 - dims)]
    volume = array.reshape(1, array.shape[0], *have).float()
    fill = 0.0 if labels else float(array.min())
    linear, offset = torch.as_tensor(voxel_map[:3, :3]), torch.as_tensor(voxel_map[:3, 3])
    scale = torch.tensor([2.0 / (n - 1) if n > 1 else 0.0 for n in have], dtype=torch.float64)
    rows = max(1, _CHUNK_VOXELS // (want[1] * want[2]))
    j, k = torch.meshgrid(torch.arange(want[1]), torch.arange(want[2]), indexing="ij")
    pieces, inside_any = [], False
    for start in range(0, want[0], rows):
        i = torch.arange(start, min(start + rows, want[0]))
        index = torch.stack(torch.broadcast_tensors(i[:, None, None], j[None], k[None]), dim=-1).double()
        where = index @ linear.T + offset  # voxel coordinates in the array, [rows, n1, n2, 3]
        inside = ((where >= -0.5) & (where <= torch.tensor(have, dtype=torch.float64) - 0.5)).all(-1)
        inside_any = inside_any or bool(inside.any())
        grid = (where * scale - (scale > 0).double()).flip(-1).float()  # grid_sample wants (x, y, z) = axes 2, 1, 0
        sampled = F.grid_sample(volume, grid[None], mode="nearest" if labels else "bilinear",
                                padding_mode="border", align_corners=True)[0]  # fmt: skip
        pieces.append(torch.where(inside, sampled, torch.tensor(fill)))
    if not inside_any:
        return None
    out = torch.cat(pieces, dim=1).reshape(array.shape[0], *shape)
    return out.round().to(array.dtype) if labels else out


class LoadScand(Transform):
    """Read each image key of a record (`medgan.io.read_image`) and resample it to a target spacing.

    Image keys become float32 tensors `[C, *spatial]` in physical units (`label_keys` stay integer,
    resampled by nearest label) and `<key>_meta` holds the new RAS affine (nested lists), modality
    and units: plain data, so MONAI's `PersistentDataset` stores it on disk as it is. The
    record's other keys (a class `label`) pass through. The first key present (the `image`) fixes
    the voxel grid: every other key is brought onto it by position (see the module's docstring).
    A file that cannot be read raises `UnreadableScan`; other problems raise `InputError`.
    """

    def __init__(
        self,
        image_keys: Sequence[str] = ("image",),
        spacing_mm: Sequence[float] | None = None,  # wanted spacing: in-plane for 2D training
        train_dims: int = 2,
        slice_axis: int = 2,
        label_keys: Sequence[str] = (),  # keys holding integer label maps or masks: kept integer, nearest label
    ):
        self.image_keys = tuple(image_keys)
        self.spacing_mm = None if spacing_mm is None else list(spacing_mm)
        self.train_dims, self.slice_axis = train_dims, slice_axis
        self.label_keys = frozenset(label_keys)

    def __call__(self, record: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(record)
        reference = None  # (key, path, shape, affine) of the grid every other key is brought onto
        for key in self.image_keys:
            if record.get(key) is None:
                continue
            path = str(record[key])
            image = _read(path, record.get(f"{key}_series"), key)
            dims = image.ndim - 1
            if dims not in (2, 3):
                raise InputError(f"expected a 2D or 3D image, got shape {tuple(image.shape)}", path=path)
            if dims < self.train_dims:
                raise InputError("a 2D image cannot feed 3D training; set data.spatial_dims=2 or remove it", path=path)
            affine = full_affine(affine_of(image), dims)
            is_labels = key in self.label_keys
            array = image.as_tensor()
            if is_labels:
                _check_labels(array, path)
            array = array.long() if is_labels else array.float()
            if reference is None:
                reference = (key, path, tuple(array.shape[1:]), affine)
            else:
                array, affine = _pair(array, affine, key, path, reference, is_labels)
            spacing = spacing_mm(affine, dims)
            target = target_spacing(spacing, self.spacing_mm, self.train_dims, self.slice_axis)
            array = resample(array, spacing, target, labels=is_labels)
            new_affine = respaced_affine(affine, target)  # the same field of view
            meta = meta_of(image)
            out[key] = array.contiguous()
            out[f"{key}_meta"] = {"affine": new_affine.tolist(), "modality": str(meta.get("modality") or ""),
                                  "units": str(meta.get("units") or ""), "source_spacing_mm": spacing}  # fmt: skip
        return out


def _read(path: str, series: str | None, key: str):
    from medgan.io import MultipleSeriesError, read_image

    try:
        return read_image(path, series=series)
    except MultipleSeriesError as err:
        keys = ", ".join(s.key for s in err.series[:3]) + (", ..." if len(err.series) > 3 else "")
        raise InputError(f"holds {len(err.series)} series ({keys}); name one in a {key}_series CSV column, or "
                         "give the folder itself (not in a CSV) to use every series", path=path) from None  # fmt: skip
    except InputError as err:
        raise UnreadableScan(err.reason, path=err.path or path) from None


def _check_labels(array: Tensor, path: str) -> None:
    """A label map holds whole numbers from 0: refuse an intensity image given as one."""
    if array.is_floating_point() and not torch.equal(array, array.round()):
        raise InputError("a label map holds whole numbers (labels 0, 1, 2, ...) but this image has fractional "
                         "values: an intensity image?", path=path)  # fmt: skip
    if array.numel() and int(array.min()) < 0:
        raise InputError(f"a label map holds labels 0, 1, 2, ... but this image holds {int(array.min())}", path=path)


def _pair(array: Tensor, affine: np.ndarray, key: str, path: str, reference: tuple, labels: bool):
    """A paired image on the reference image's grid, and that grid's affine."""
    ref_key, ref_path, ref_shape, ref_affine = reference
    geometry = f"{key} {path} ({describe_grid(array.shape[1:], affine)}) and {ref_key} {ref_path} " \
               f"({describe_grid(ref_shape, ref_affine)})"  # fmt: skip
    if array.ndim - 1 != len(ref_shape):
        raise InputError(f"a pair must be both 2D or both 3D: {geometry}")
    moved = onto_grid(array, affine, ref_shape, ref_affine, labels=labels)
    if moved is None:
        raise InputError(f"the pair does not overlap in space, so it cannot be matched voxel by voxel: {geometry}")
    return moved, ref_affine
