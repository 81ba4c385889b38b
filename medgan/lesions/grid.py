"""Voxel-grid helpers shared by the lesion model: local boxes, Gaussian smoothing and ball dilation.

Everything works on 3D torch tensors `[i, j, k]` on whatever device they live on, so the same code
serves the command (CPU) and `RandLesiond` (CPU or GPU). Distances are in millimetres on the
scan's own (possibly anisotropic) grid: a kernel's extent along each axis is its size in mm over
that axis's voxel size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Box", "border", "box_dilate", "dilate", "distance_mm", "gaussian_kernel", "smooth", "voxel_offsets_mm"]

_DISTANCE_CHUNK = 1 << 23  # elements of the [lines, n, n] table evaluated at a time


@dataclass(frozen=True)
class Box:
    """A local box of voxels `[centre - half, centre + half]` per axis, and where it meets the image.

    `inner` slices the box's own arrays, `outer` the image's; both cover only voxels inside the image.
    """

    centre: tuple[int, int, int]  # voxel index the box is centred on
    half: tuple[int, int, int]  # half-size in voxels along each axis
    image_shape: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(2 * h + 1 for h in self.half)

    @property
    def lo(self) -> tuple[int, int, int]:
        return tuple(c - h for c, h in zip(self.centre, self.half, strict=True))

    @property
    def outer(self) -> tuple[slice, slice, slice]:
        return tuple(slice(max(lo, 0), min(lo + s, n)) for lo, s, n in zip(self.lo, self.shape, self.image_shape,
                                                                           strict=True))  # fmt: skip

    @property
    def inner(self) -> tuple[slice, slice, slice]:
        return tuple(slice(o.start - lo, o.stop - lo) for o, lo in zip(self.outer, self.lo, strict=True))

    @property
    def clipped(self) -> bool:
        """True when part of the box lies outside the image."""
        return any(o.stop - o.start != s for o, s in zip(self.outer, self.shape, strict=True))

    def moved(self, centre: Sequence[int]) -> Box:
        return Box(tuple(int(c) for c in centre), self.half, self.image_shape)


def voxel_offsets_mm(half: Sequence[int], linear: Tensor, shift_vox: Tensor) -> Tensor:
    """World offsets (mm) of the voxels of a box from the point `shift_vox` (voxels, relative to the box
    centre): `[2h0+1, 2h1+1, 2h2+1, 3]`. `linear` is the affine's 3x3 part (mm per voxel step, RAS)."""
    axes = [torch.arange(-h, h + 1, device=linear.device, dtype=linear.dtype) for h in half]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1) - shift_vox
    return grid @ linear.T


def gaussian_kernel(sigma_vox: float, device, dtype=torch.float32, truncate: float = 3.0) -> Tensor:
    """Normalised 1D Gaussian of standard deviation `sigma_vox`, cut at `truncate` sigma ([1.] for ~0)."""
    if sigma_vox < 1e-3:
        return torch.ones(1, device=device, dtype=dtype)
    radius = max(1, math.ceil(truncate * sigma_vox))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma_vox) ** 2)
    return (kernel / kernel.sum()).to(dtype)


def smooth(volume: Tensor, sigma_vox: Sequence[float], truncate: float = 3.0) -> Tensor:
    """Separable Gaussian smoothing of a 3D tensor; outside the volume counts as zero. Each axis is a sum of
    shifted copies (faster than a thin convolution on small volumes, on CPU and GPU alike)."""
    out = volume
    for axis, sigma in enumerate(sigma_vox):
        kernel = gaussian_kernel(float(sigma), volume.device, volume.dtype, truncate)
        if kernel.numel() == 1:
            continue
        radius = kernel.numel() // 2
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        padded = F.pad(out[None, None], pad)[0, 0]
        n = out.shape[axis]
        total = torch.zeros_like(out)
        for i, weight in enumerate(kernel.tolist()):
            total += weight * padded.narrow(axis, i, n)
        out = total
    return out


def distance_mm(mask: Tensor, spacing_mm: Sequence[float], max_mm: float = math.inf) -> Tensor:
    """Exact Euclidean distance (mm) from each voxel centre to the nearest voxel of `mask` (3D bool; 0 inside).
    Distances beyond `max_mm` come out as inf, which lets each axis look only that far. Separable: the
    distance along the first axis comes from running maxima, then the squared distance is minimised along
    each other axis in turn, each line over a window of its voxels at once."""
    far = torch.tensor(float("inf"), device=mask.device)
    if not math.isinf(max_mm):  # only voxels within max_mm of the mask's bounding box can be that near
        where = mask.nonzero()
        if len(where) == 0:
            return torch.full(mask.shape, float("inf"), device=mask.device)
        pad = [math.floor(max_mm / float(h) + 1e-9) for h in spacing_mm]
        part = tuple(slice(max(0, int(a) - p), min(n, int(b) + p + 1)) for a, b, p, n in
                     zip(where.amin(0).tolist(), where.amax(0).tolist(), pad, mask.shape, strict=True))  # fmt: skip
        if any(s.stop - s.start < n for s, n in zip(part, mask.shape, strict=True)):
            out = torch.full(mask.shape, float("inf"), device=mask.device)
            out[part] = distance_mm(mask[part].contiguous(), spacing_mm, max_mm)
            return out
    squared = _line_distance(mask, 0, float(spacing_mm[0])) ** 2  # the first axis in linear time
    for axis, h in enumerate(spacing_mm):
        if axis == 0:
            continue
        n = squared.shape[axis]
        reach = n - 1 if math.isinf(max_mm) else min(n - 1, math.floor(max_mm / float(h) + 1e-9))
        if reach <= 0:
            continue
        moved = squared.movedim(axis, -1)
        lines = F.pad(moved.reshape(-1, n), (reach, reach), value=float("inf"))
        offsets = torch.arange(-reach, reach + 1, device=mask.device, dtype=torch.float32) * float(h)
        cost = offsets**2
        out = torch.empty(lines.shape[0], n, device=mask.device)
        step = max(1, _DISTANCE_CHUNK // (n * (2 * reach + 1)))
        for start in range(0, lines.shape[0], step):
            windows = lines[start : start + step].unfold(1, 2 * reach + 1, 1)  # [lines, n, 2 reach + 1]
            out[start : start + step] = (windows + cost).amin(-1)
        squared = out.reshape(moved.shape).movedim(-1, axis)
    distance = squared.sqrt()
    return distance if math.isinf(max_mm) else torch.where(distance <= max_mm + 1e-6, distance, far)


def _line_distance(mask: Tensor, axis: int, h: float) -> Tensor:
    """Distance (mm) along `axis` to the nearest mask voxel on the same line (inf if none), from running
    maxima of the last mask index seen from either end."""
    n = mask.shape[axis]
    shape = [1, 1, 1]
    shape[axis] = n
    index = torch.arange(n, device=mask.device, dtype=torch.float32).reshape(shape).expand(mask.shape)
    before = torch.where(mask, index, torch.tensor(-math.inf, device=mask.device)).cummax(axis).values
    after = torch.where(mask, index, torch.tensor(math.inf, device=mask.device)).flip(axis).cummin(axis).values
    return torch.minimum(index - before, after.flip(axis) - index) * h


def dilate(mask: Tensor, radius_mm: float, spacing_mm: Sequence[float]) -> Tensor:
    """Voxels within `radius_mm` (centre to centre) of `mask` (a 3D bool tensor): a ball dilation."""
    if radius_mm <= 0:
        return mask.clone()
    return distance_mm(mask, spacing_mm, radius_mm) <= radius_mm + 1e-6


def box_dilate(mask: Tensor, radius_vox: Sequence[int]) -> Tensor:
    """Voxels within `radius_vox[a]` steps of `mask` along every axis a at once (a box dilation), separably:
    along each axis, the union of shifted copies."""
    out = mask
    for axis, r in enumerate(radius_vox):
        if r <= 0:
            continue
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = int(r)
        padded = F.pad(out[None, None].to(torch.uint8), pad)[0, 0].bool()
        n = out.shape[axis]
        grown = padded.narrow(axis, 0, n).clone()
        for i in range(1, 2 * int(r) + 1):
            grown |= padded.narrow(axis, i, n)
        out = grown
    return out


def border(mask: Tensor) -> Tensor:
    """Voxels of `mask` with a face neighbour outside it (or on the edge of the array)."""
    padded = F.pad(mask[None, None].to(torch.uint8), (1, 1, 1, 1, 1, 1))[0, 0].bool()
    inner = mask.clone()
    for axis in range(3):
        n = mask.shape[axis]
        for start in (0, 2):
            inner &= (
                padded.narrow(axis, start, n)
                .narrow((axis + 1) % 3, 1, mask.shape[(axis + 1) % 3])
                .narrow((axis + 2) % 3, 1, mask.shape[(axis + 2) % 3])
            )
    return mask & ~inner
