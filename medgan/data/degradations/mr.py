"""MR acquisition artefacts simulated in k-space: undersampling, truncation (Gibbs) and rigid motion.

Images are magnitude images (phase taken as zero); k-space is their centred orthonormal Fourier
transform over all spatial axes, and the output is the magnitude of the zero-filled inverse
transform. One spatial axis is the readout (`readout_axis`, always fully sampled); the others are
phase-encoding axes (one in 2D, two in 3D), along which lines are skipped or acquired at other poses.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from medgan.data.degradations.base import (
    Degradation,
    Param,
    as_batch_records,
    check_spacing,
    make_generator,
    restore_dtype,
    spatial_axis,
    spatial_shape_of,
    working_dtype,
)
from medgan.data.degradations.registry import DEGRADATIONS

__all__ = [
    "MRGibbs",
    "MRMotion",
    "MRUndersample",
    "motion_kspace",
    "rigid_transform",
    "to_image",
    "to_kspace",
    "undersampling_mask",
]

_READOUT = Param("readout_axis", "", "the fully sampled (frequency-encoding) spatial axis", kind="int",
                 low=-3, high=2, default=0)  # fmt: skip


def to_kspace(image: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Centred orthonormal FFT over `dims` (the zero frequency at index n // 2)."""
    shifted = torch.fft.ifftshift(image, dim=tuple(dims))
    return torch.fft.fftshift(torch.fft.fftn(shifted, dim=tuple(dims), norm="ortho"), dim=tuple(dims))


def to_image(kspace: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """The inverse of `to_kspace` (complex)."""
    shifted = torch.fft.ifftshift(kspace, dim=tuple(dims))
    return torch.fft.fftshift(torch.fft.ifftn(shifted, dim=tuple(dims), norm="ortho"), dim=tuple(dims))


def masked_magnitude(kspace: torch.Tensor, centred_mask: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """|inverse FFT| of the (uncentred) FFT `kspace` times a mask laid out in centred k-space. Shifting the mask
    instead of image and k-space gives the same magnitude (the shifts only add phase ramps) for less work."""
    mask = torch.fft.ifftshift(centred_mask, dim=tuple(dims))
    return torch.fft.ifftn(kspace * mask, dim=tuple(dims)).abs()


def phase_axes(spatial_dims: int, readout_axis: int) -> list[int]:
    """The spatial axes other than the readout, in order."""
    readout = spatial_axis(readout_axis, spatial_dims, "MR k-space", "readout_axis")
    return [a for a in range(spatial_dims) if a != readout]


def _centre(n: int, fraction: float) -> torch.Tensor:
    """Indices of the central round(n * fraction) lines (the zero frequency at n // 2 among them)."""
    count = min(n, round(n * fraction))
    start = n // 2 - count // 2
    return torch.arange(start, start + count)


def undersampling_mask(
    sizes: Sequence[int],  # lines along each phase-encoding axis (one or two axes)
    acceleration: float = 4.0,  # lines in k-space / lines acquired (total, centre included)
    center_fraction: float = 0.08,  # fraction of lines along each phase axis always acquired at the centre
    pattern: str = "random",  # "random" lines, or "equispaced" along the first phase axis
    partial_fourier: float = 1.0,  # fraction of the first phase axis acquired (the start skipped)
    seed: int = 0,  # the random lines and the equispaced offset
) -> torch.Tensor:
    """Boolean mask over the phase-encoding axes, on the CPU (the same lines on every device)."""
    generator = make_generator(seed)
    sizes = tuple(int(n) for n in sizes)
    total = math.prod(sizes)
    centre = torch.zeros(sizes, dtype=torch.bool)
    index = tuple(_centre(n, center_fraction) for n in sizes)
    centre[torch.meshgrid(*index, indexing="ij")] = True
    target = max(round(total / acceleration), int(centre.sum()))
    mask = centre.clone()
    if pattern == "random":
        outside = (~centre).reshape(-1).nonzero().squeeze(1)
        chosen = outside[torch.randperm(len(outside), generator=generator)[: target - int(centre.sum())]]
        mask.view(-1)[chosen] = True
    elif pattern == "equispaced":
        first = sizes[0]
        per_line = total // first
        lines_wanted = max(target / per_line - len(index[0]), 0.0)  # outer lines along the first axis
        if lines_wanted > 0:
            step = max((first - len(index[0])) / lines_wanted, 1.0)
            offset = float(torch.rand((), generator=generator, dtype=torch.float64)) * step
            lines = torch.arange(offset, first, step, dtype=torch.float64).floor().long().unique()
            mask[lines] = True
    else:
        raise ValueError(f"unknown sampling pattern {pattern!r} (valid: random, equispaced)")
    skipped = math.floor((1.0 - partial_fourier) * sizes[0])
    mask[:skipped] = False
    return mask


def _broadcast_mask(mask: torch.Tensor, spatial_dims: int, readout_axis: int) -> torch.Tensor:
    """Insert the readout axis (size 1) so the mask broadcasts over `[C, *spatial]`."""
    return mask.unsqueeze(spatial_axis(readout_axis, spatial_dims, "MR k-space", "readout_axis")).unsqueeze(0)


@DEGRADATIONS.register("mr-undersample")
class MRUndersample(Degradation):
    """Cartesian undersampling with a fully sampled centre and optional partial Fourier; zero-filled."""

    name = "mr-undersample"
    params = (
        Param("acceleration", "", "k-space lines / acquired lines", low=1.0, high=32.0, mild=2.0, severe=8.0,
              log=True),
        Param("center_fraction", "", "fraction of phase lines always acquired at the centre", low=0.0, high=1.0,
              default=0.08),
        Param("pattern", "", "how the outer lines are chosen", kind="choice", choices=("random", "equispaced"),
              default="random"),
        Param("partial_fourier", "", "fraction of the first phase axis acquired", low=0.5, high=1.0, default=1.0),
        _READOUT,
    )  # fmt: skip

    def apply(self, x: torch.Tensor, records: dict | Sequence[dict], spacing_mm: Sequence[float] | None = None):
        shape = spatial_shape_of(x, self.name)
        records = as_batch_records(records, x.shape[0], self.name)
        dims = [2 + a for a in range(len(shape))]
        kspace = torch.fft.fftn(x.to(working_dtype(x)), dim=dims)
        masks = []
        for record in records:
            axes = phase_axes(len(shape), record["readout_axis"])
            mask = undersampling_mask(
                [shape[a] for a in axes],
                record["acceleration"],
                record["center_fraction"],
                record["pattern"],
                record["partial_fourier"],
                record["noise_seed"],
            )
            masks.append(_broadcast_mask(mask, len(shape), record["readout_axis"]))
        mask = torch.stack(masks).to(kspace.device)
        return restore_dtype(masked_magnitude(kspace, mask, dims), x)


@DEGRADATIONS.register("mr-gibbs")
class MRGibbs(Degradation):
    """Gibbs ringing: k-space truncated to its central fraction along every spatial axis, zero-filled."""

    name = "mr-gibbs"
    params = (
        Param(
            "kept_fraction", "", "fraction of k-space kept along each axis", low=0.05, high=1.0, mild=0.7, severe=0.3
        ),
    )

    def apply(self, x: torch.Tensor, records: dict | Sequence[dict], spacing_mm: Sequence[float] | None = None):
        shape = spatial_shape_of(x, self.name)
        records = as_batch_records(records, x.shape[0], self.name)
        dims = [2 + a for a in range(len(shape))]
        kspace = torch.fft.fftn(x.to(working_dtype(x)), dim=dims)
        masks = []
        for record in records:
            mask = torch.ones((), dtype=torch.bool)
            for n in shape:
                line = torch.zeros(n, dtype=torch.bool)
                line[_centre(n, record["kept_fraction"])] = True
                mask = mask.unsqueeze(-1) & line
            masks.append(mask.unsqueeze(0))
        mask = torch.stack(masks).to(kspace.device)
        return restore_dtype(masked_magnitude(kspace, mask, dims), x)


def rotation_matrix(angles_deg: Sequence[float]) -> torch.Tensor:
    """Rotation in array-axis coordinates: one angle (2D, axis 0 towards axis 1) or three (3D: about axes
    0, 1 and 2 in turn)."""
    radians = [math.radians(a) for a in angles_deg]
    if len(radians) == 1:
        c, s = math.cos(radians[0]), math.sin(radians[0])
        return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    matrix = torch.eye(3, dtype=torch.float64)
    for axis, angle in enumerate(radians):
        i, j = [a for a in range(3) if a != axis]
        turn = torch.eye(3, dtype=torch.float64)
        turn[i, i] = turn[j, j] = math.cos(angle)
        turn[i, j], turn[j, i] = -math.sin(angle), math.sin(angle)
        matrix = turn @ matrix
    return matrix


def centred_coordinates(shape: Sequence[int], spacing: Sequence[float], device=None, dtype=torch.float32):
    """`[*shape, dims]` voxel centres in mm relative to the grid's centre."""
    pairs = zip(shape, spacing, strict=True)
    axes = [(torch.arange(n, device=device, dtype=dtype) - (n - 1) / 2) * s for n, s in pairs]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def rigid_transform(
    image: torch.Tensor, angles_deg: Sequence[float], spacing: Sequence[float], coords: torch.Tensor | None = None
) -> torch.Tensor:
    """`image` `[C, *spatial]` rotated about its centre (in mm, so anisotropic voxels rotate correctly),
    sampled bilinearly; no rotation returns it unchanged. `coords`: `centred_coordinates`, when at hand."""
    if not any(angles_deg):
        return image
    shape = image.shape[1:]
    if coords is None:
        coords = centred_coordinates(shape, spacing, image.device, image.dtype)
    rotation = rotation_matrix(angles_deg).to(image.device, image.dtype)
    source = coords @ rotation  # each output point reads the input at R^T r
    half = torch.tensor([max(n - 1, 1) * s / 2 for n, s in zip(shape, spacing, strict=True)], device=image.device)
    grid = (source / half.to(image.dtype)).flip(-1)  # grid_sample wants (last axis, ..., first axis)
    return F.grid_sample(image[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=True)[0]


def _segment_bounds(lines: int, segments: int) -> list[tuple[int, int]]:
    edges = [round(k * lines / segments) for k in range(segments + 1)]
    return list(itertools.pairwise(edges))


def reference_segment(lines: int, segments: int) -> int:
    """The segment holding the zero frequency: acquired at the reference pose, so the image stays put."""
    return next(k for k, (a, b) in enumerate(_segment_bounds(lines, segments)) if a <= lines // 2 < b)


def motion_kspace(image: torch.Tensor, record: dict, spacing: Sequence[float]) -> torch.Tensor:
    """Complex k-space `[C, *spatial]` of `image` whose segments (bands of the first phase axis) were
    acquired at the record's poses: rotation (degrees) about the centre, then translation (mm) as a
    phase ramp, which is exact."""
    shape = tuple(image.shape[1:])
    dims = list(range(1, len(shape) + 1))
    axis = phase_axes(len(shape), record["readout_axis"])[0]
    kspace = to_kspace(image, dims)
    still = kspace.clone()
    coords = centred_coordinates(shape, spacing, image.device, image.dtype)
    for (start, stop), pose in zip(_segment_bounds(shape[axis], record["segments"]), record["poses"], strict=True):
        angles, shift = pose["rotation_deg"], pose["translation_mm"]
        if not any(angles) and not any(shift):
            continue
        band = [slice(None)] * (len(shape) + 1)
        band[axis + 1] = slice(start, stop)
        band = tuple(band)
        moved = to_kspace(rigid_transform(image, angles, spacing, coords), dims)[band] if any(angles) else still[band]
        if any(shift):  # the phase ramp exp(-2 pi i k.t) of a translation t, on this band's lines only
            ramp = torch.zeros((), device=image.device, dtype=torch.float64)
            for a, (n, s, t) in enumerate(zip(shape, spacing, shift, strict=True)):
                k = (torch.arange(n, device=image.device, dtype=torch.float64) - n // 2) / (n * s)
                k = k[start:stop] if a == axis else k
                ramp = ramp + k.reshape([-1 if d == a else 1 for d in range(len(shape))]) * t
            moved = moved * torch.exp(-2j * math.pi * ramp).to(moved.dtype)
        kspace[band] = moved
    return kspace


@DEGRADATIONS.register("mr-motion")
class MRMotion(Degradation):
    """Rigid motion: k-space acquired in segments, each at its own pose (the centre's at rest)."""

    name = "mr-motion"
    params = (
        Param("rotation_deg", "degrees", "largest rotation of a segment about each axis", low=0.0, high=30.0,
              mild=0.5, severe=5.0),
        Param("translation_mm", "mm", "largest translation of a segment along each axis", low=0.0, high=50.0,
              mild=0.5, severe=5.0),
        Param("segments", "", "k-space segments (shots) along the first phase-encoding axis", kind="int", low=2,
              high=256, default=8),
        _READOUT,
    )  # fmt: skip

    def sample_extra(self, record: dict, generator: torch.Generator, spatial_dims: int, spacing_mm=None) -> dict:
        rotations = 1 if spatial_dims == 2 else 3
        poses = []
        for _ in range(record["segments"]):
            draw = (torch.rand(rotations + spatial_dims, generator=generator, dtype=torch.float64) * 2 - 1).tolist()
            poses.append(
                {
                    "rotation_deg": [round(v * record["rotation_deg"], 6) for v in draw[:rotations]],
                    "translation_mm": [round(v * record["translation_mm"], 6) for v in draw[rotations:]],
                }
            )
        # The segment holding the zero frequency is acquired at rest whatever its drawn pose (apply), so
        # the image stays where it was; which segment that is depends on the image's size.
        return {"poses": poses}

    def apply(self, x: torch.Tensor, records: dict | Sequence[dict], spacing_mm: Sequence[float] | None = None):
        shape = spatial_shape_of(x, self.name)
        records = as_batch_records(records, x.shape[0], self.name)
        spacing = check_spacing(spacing_mm, len(shape), self.name)
        image = x.to(working_dtype(x))
        out = []
        for item, record in zip(image, records, strict=True):
            poses = record["poses"]
            if len(poses) != record["segments"] or any(len(p["translation_mm"]) != len(shape) for p in poses):
                raise ValueError(f"{self.name}: the record's poses do not fit {len(shape)}D images of its segments")
            axis = phase_axes(len(shape), record["readout_axis"])[0]
            rest = reference_segment(shape[axis], record["segments"])
            poses = [p if k != rest else {"rotation_deg": [0.0], "translation_mm": [0.0]} for k, p in enumerate(poses)]
            kspace = motion_kspace(item, {**record, "poses": poses}, spacing)
            out.append(to_image(kspace, list(range(1, len(shape) + 1))).abs())
        return restore_dtype(torch.stack(out), x)
