"""Geometry shared by every procedural phantom, 2D and 3D alike.

A phantom is painted as a label map on a `Grid` (voxel centres in RAS millimetres), one
`Ellipsoid` after another, later shapes over earlier ones. A 2D grid is the axial plane
z = 0 of the same world, so the same shapes give the 2D and the 3D phantom. Intensities come
afterwards from a per-label table, smooth random fields (`smooth_field`) and noise.

Everything here is deterministic; randomness arrives as seeds from the parameter record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Ellipsoid", "Grid", "gaussian_blur", "paint", "smooth_field"]


@dataclass(frozen=True)
class Grid:
    """Voxel centres of an axial image centred on the world origin.

    Array axes run to the patient's left, posterior and superior (the usual DICOM axial
    layout), so the RAS affine is `diag(-sx, -sy, sz)` and a DICOM series written from it has
    ImageOrientationPatient 1\\0\\0\\0\\1\\0. A 2D grid lies in the plane z = 0.
    """

    shape: tuple[int, ...]  # voxels per axis, 2 or 3 of them
    spacing_mm: tuple[float, ...]  # voxel size per axis (mm)

    @property
    def spatial_dims(self) -> int:
        return len(self.shape)

    @property
    def fov_mm(self) -> tuple[float, ...]:
        """Extent of the image along each axis (mm)."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing_mm, strict=True))

    def affine(self) -> np.ndarray:
        """The 4x4 RAS affine; a 2D image keeps a unit third column (its plane is z = 0)."""
        signs = (-1.0, -1.0, 1.0)[: self.spatial_dims]
        affine = np.eye(4)
        for axis, (n, s, sign) in enumerate(zip(self.shape, self.spacing_mm, signs, strict=True)):
            affine[axis, axis] = sign * s
            affine[axis, 3] = -sign * s * (n - 1) / 2.0  # centres the image on the origin
        return affine

    def axes_mm(self) -> list[np.ndarray]:
        """World coordinate of every index along each axis, shaped to broadcast over the grid."""
        affine = self.affine()
        axes = []
        for axis, n in enumerate(self.shape):
            coords = affine[axis, 3] + affine[axis, axis] * np.arange(n, dtype=np.float64)
            view = [1] * self.spatial_dims
            view[axis] = n
            axes.append(coords.reshape(view))
        return axes


@dataclass(frozen=True)
class Ellipsoid:
    """A solid ellipsoid; an infinite z radius makes an elliptic cylinder along z."""

    label: int
    centre_mm: tuple[float, float, float]  # RAS
    radii_mm: tuple[float, float, float]  # semi-axes before rotation
    angle_deg: float = 0.0  # rotation about the superior (z) axis, from R towards A


def _bounds(grid_axis: np.ndarray, low: float, high: float) -> slice | None:
    inside = np.nonzero((grid_axis.ravel() >= low) & (grid_axis.ravel() <= high))[0]
    if inside.size == 0:
        return None
    return slice(int(inside[0]), int(inside[-1]) + 1)


def paint(
    labels: np.ndarray,
    grid: Grid,
    shape: Ellipsoid,
    boundary_field: np.ndarray | None = None,  # smooth field (unit sd) that moves the surface
    boundary_mm: float = 0.0,  # how far (mm, per unit of the field) the surface moves
    within: Sequence[int] | None = None,  # paint only over voxels that hold one of these labels
) -> None:
    """Set `labels` to `shape.label` inside `shape`, in place; only its bounding box is touched.

    A `boundary_field` makes the surface wavy (cortical folding, irregular organ edges)
    without changing the shape's centre or size on average.
    """
    axes = grid.axes_mm()
    cx, cy, cz = shape.centre_mm
    rx, ry, rz = shape.radii_mm
    theta = math.radians(shape.angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    reach = boundary_mm * 4.0  # a unit-sd field rarely exceeds 4
    ex = math.hypot(rx * cos, ry * sin) + reach
    ey = math.hypot(rx * sin, ry * cos) + reach
    box = [_bounds(axes[0], cx - ex, cx + ex), _bounds(axes[1], cy - ey, cy + ey)]
    if grid.spatial_dims == 3:
        box.append(slice(None) if math.isinf(rz) else _bounds(axes[2], cz - rz - reach, cz + rz + reach))
    if any(b is None for b in box):
        return
    x, y = axes[0][box[0], ...], axes[1][:, box[1], ...]
    dx, dy = x - cx, y - cy
    u = (cos * dx + sin * dy) / rx
    v = (-sin * dx + cos * dy) / ry
    q = u * u + v * v
    if not math.isinf(rz):
        z = axes[2][..., box[2]] if grid.spatial_dims == 3 else 0.0
        q = q + ((z - cz) / rz) ** 2
    if boundary_field is not None and boundary_mm:
        # Scale the limit by the local shift relative to the shape's mean radius.
        mean_radius = (rx + ry) / 2 if math.isinf(rz) else (rx + ry + rz) / 3
        inside = np.sqrt(q) < 1.0 + boundary_field[tuple(box)] * (boundary_mm / mean_radius)
    else:
        inside = q < 1.0
    region = labels[tuple(box)]
    if within is not None:
        inside = inside & np.isin(region, within)
    region[np.broadcast_to(inside, region.shape)] = shape.label


def smooth_field(grid: Grid, seed: int, scale_mm: float) -> np.ndarray:
    """A smooth random field with zero mean and unit standard deviation over the grid.

    Gaussian random weights on a lattice of knots `scale_mm` apart are spread with a Gaussian
    kernel of the same width, axis by axis (a separable tensor product), which costs a few
    small matrix products instead of a full-volume convolution.
    """
    rng = np.random.default_rng(seed)
    kernels = []
    for n, spacing in zip(grid.shape, grid.spacing_mm, strict=True):
        extent = n * spacing
        knots = max(2, math.ceil(extent / scale_mm) + 3)
        knot_mm = (np.arange(knots) - (knots - 1) / 2.0) * scale_mm
        voxel_mm = (np.arange(n) - (n - 1) / 2.0) * spacing
        kernels.append(np.exp(-0.5 * ((voxel_mm[:, None] - knot_mm[None, :]) / scale_mm) ** 2))
    field = rng.standard_normal(tuple(k.shape[1] for k in kernels))
    for axis, kernel in enumerate(kernels):
        field = np.moveaxis(np.tensordot(kernel, np.moveaxis(field, axis, 0), axes=1), 0, axis)
    field -= field.mean()
    sd = field.std()
    return field / sd if sd > 0 else field


def gaussian_blur(array: np.ndarray, sigma_vox: Sequence[float]) -> np.ndarray:
    """Separable Gaussian blur (edges replicated): the scanner's point spread, for partial volume.

    Kernels are short at phantom resolutions (sigma of a voxel or less), so shifted sums
    beat an FFT and need no SciPy.
    """
    out = np.asarray(array, dtype=np.float64)
    for axis, sigma in enumerate(sigma_vox):
        if sigma < 0.2:  # narrower than a fifth of a voxel: the kernel is a delta
            continue
        radius = max(1, math.ceil(3.0 * sigma))
        offsets = np.arange(-radius, radius + 1)
        weights = np.exp(-0.5 * (offsets / sigma) ** 2)
        weights /= weights.sum()
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        blurred = np.zeros_like(out)
        for offset, weight in zip(offsets, weights, strict=True):
            index = [slice(None)] * out.ndim
            index[axis] = slice(radius + offset, radius + offset + n)
            blurred += weight * padded[tuple(index)]
        out = blurred
    return out
