"""Voxel-to-world geometry: the one home of grid arithmetic, and the one place where DICOM/ITK LPS
meets medgan's RAS.

medgan arrays are indexed `[C, i, j, k]`; `affine @ [i, j, k, 1]` gives the voxel centre in
RAS millimetres (x to the patient's Right->Left is negative, as in NIfTI and MONAI).
DICOM and ITK store positions in LPS; `LPS_TO_RAS` flips the first two axes and is its own
inverse. For a DICOM slice, `i` runs along a row (increasing column index) and `j` down the
columns (increasing row index), so pixel arrays `(rows, cols)` are transposed to `(i, j)`.

A grid is an array's spatial shape and its affine. A 2D image is a single slice of a 3D grid: the
third column of its 4x4 affine is the plane's normal (`full_affine`). Two grids are one grid when
one's voxel centres are the other's, perhaps stored in another axis order and direction:
`compare_grids` finds the `AxisMap` (a permutation and flips) that moves an array from one onto the
other without interpolating, or raises `GridMismatch` saying why there is none. Its tolerances are
the two constants below, in voxels of the reference. Along an axis one voxel long (a single slice)
only the direction counts: a slice's thickness does not change where its voxels are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from nibabel.orientations import aff2axcodes

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# One voxel step (an affine column: its length and direction) may differ from the reference's by this
# fraction of the reference's voxel: 0.1% in spacing, or half a voxel of drift across 500 voxels.
STEP_TOLERANCE_VOXELS = 1e-3
# First voxel centres this close, in the reference's smallest in-plane voxel, are one point.
ORIGIN_TOLERANCE_VOXELS = 0.05
_MISSING_COLUMN_MM = 1e-6  # a 2D affine's third column shorter than this is absent

__all__ = [
    "LPS_TO_RAS",
    "ORIGIN_TOLERANCE_VOXELS",
    "STEP_TOLERANCE_VOXELS",
    "AxisMap",
    "GridMismatch",
    "affine_from_dicom",
    "affine_from_sitk",
    "axis_directions",
    "axis_map_towards",
    "compare_grids",
    "describe_grid",
    "flip_lps_ras",
    "full_affine",
    "is_sheared",
    "orientation_code",
    "reorient_like",
    "respaced_affine",
    "sitk_geometry_from_affine",
    "slice_normal",
    "spacing_mm",
]


def flip_lps_ras(affine: np.ndarray) -> np.ndarray:
    """Convert a 4x4 affine between LPS and RAS world coordinates (the map is an involution)."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def slice_normal(row_cosine: np.ndarray, col_cosine: np.ndarray) -> np.ndarray:
    """Unit normal of a DICOM image plane (row x column), the direction slices are sorted along."""
    normal = np.cross(np.asarray(row_cosine, float), np.asarray(col_cosine, float))
    return normal / np.linalg.norm(normal)


def affine_from_dicom(
    row_cosine: np.ndarray,  # ImageOrientationPatient[:3], direction of increasing column index
    col_cosine: np.ndarray,  # ImageOrientationPatient[3:], direction of increasing row index
    pixel_spacing_mm: tuple[float, float],  # PixelSpacing: (between rows, between columns)
    origin_lps_mm: np.ndarray,  # ImagePositionPatient of the first slice
    slice_step_lps_mm: np.ndarray,  # vector from one slice's position to the next (tilt included)
) -> np.ndarray:
    """RAS affine for a stack of DICOM slices, indexed (column, row, slice)."""
    lps = np.eye(4)
    lps[:3, 0] = np.asarray(row_cosine, float) * float(pixel_spacing_mm[1])
    lps[:3, 1] = np.asarray(col_cosine, float) * float(pixel_spacing_mm[0])
    lps[:3, 2] = np.asarray(slice_step_lps_mm, float)
    lps[:3, 3] = np.asarray(origin_lps_mm, float)
    return flip_lps_ras(lps)


def affine_from_sitk(direction: tuple[float, ...], spacing: tuple[float, ...], origin: tuple[float, ...]):
    """RAS 4x4 affine from an ITK image's LPS direction (row-major), spacing and origin (2D or 3D)."""
    dim = len(spacing)
    lps = np.eye(4)
    lps[:dim, :dim] = np.asarray(direction, float).reshape(dim, dim) * np.asarray(spacing, float)
    lps[:dim, 3] = np.asarray(origin, float)
    return flip_lps_ras(lps)


def sitk_geometry_from_affine(affine: np.ndarray, dim: int = 3):
    """(direction row-major, spacing, origin) in LPS for an ITK image; refuses sheared affines."""
    if is_sheared(affine):
        raise ValueError("the affine is sheared (e.g. gantry tilt); ITK images cannot store it")
    lps = flip_lps_ras(affine)
    direction = axis_directions(lps)[:dim, :dim]
    return tuple(direction.ravel()), tuple(spacing_mm(lps, dim)), tuple(lps[:dim, 3])


def spacing_mm(affine: np.ndarray, spatial_dims: int = 3) -> list[float]:
    """Voxel size (mm) along each of the first `spatial_dims` array axes: the lengths of the affine's
    columns, as plain floats (they go into JSON records and checkpoints)."""
    columns = np.asarray(affine, dtype=np.float64)[:-1, :spatial_dims]
    return [float(v) for v in np.linalg.norm(columns, axis=0)]


def axis_directions(affine: np.ndarray) -> np.ndarray:
    """3x3: column a is the unit vector (RAS) along which array axis a runs (zero for a zero column)."""
    columns = np.asarray(affine, dtype=np.float64)[:3, :3]
    return columns / np.maximum(np.linalg.norm(columns, axis=0), 1e-12)


def is_sheared(affine: np.ndarray, tol: float = 1e-4) -> bool:
    """True when the voxel axes are not mutually orthogonal (gantry tilt, irregular stacks)."""
    unit = axis_directions(affine)
    return bool(np.abs(unit.T @ unit - np.eye(3)).max() > tol)


def orientation_code(affine: np.ndarray) -> str:
    """Three letters naming where each array axis points, e.g. 'RAS' or 'LPS' (nibabel's convention)."""
    return "".join(c or "?" for c in aff2axcodes(np.asarray(affine, float)))


def full_affine(affine: np.ndarray, spatial_dims: int) -> np.ndarray:
    """The 4x4 RAS affine of an image with `spatial_dims` axes, from a 4x4 or a (d+1)x(d+1) affine.

    A 2D image's third column is made usable as a slice axis: a 3x3 affine (the plane z = 0) gains
    +z; a 4x4 one whose third column is zero gains the plane's unit normal (column 0 x column 1).
    """
    given = np.asarray(affine, dtype=np.float64)
    if given.shape == (4, 4):
        full = given.copy()
    elif given.ndim == 2 and given.shape[0] == given.shape[1] and given.shape[0] in (2, 3):
        d = given.shape[0] - 1
        full = np.eye(4)
        full[:d, :d], full[:d, 3] = given[:d, :d], given[:d, d]
    else:
        raise ValueError(f"an affine is 4x4, or 3x3 for a 2D image; got shape {given.shape}")
    if spatial_dims == 2 and np.linalg.norm(full[:3, 2]) < _MISSING_COLUMN_MM:
        normal = np.cross(full[:3, 0], full[:3, 1])
        full[:3, 2] = normal / max(float(np.linalg.norm(normal)), 1e-12)
    return full


def respaced_affine(affine: np.ndarray, target_mm: Sequence[float]) -> np.ndarray:
    """The affine of the same field of view sampled at `target_mm` along its first len(target_mm)
    axes: directions kept, and the first voxel's centre moved by half the change in voxel size."""
    dims = len(target_mm)
    old = np.asarray(affine, dtype=np.float64)
    directions = axis_directions(old)[:, :dims]
    shift_mm = 0.5 * (np.asarray(target_mm, dtype=np.float64) - np.asarray(spacing_mm(old, dims)))
    new = old.copy()
    new[:3, :dims] = directions * np.asarray(target_mm, dtype=np.float64)
    new[:3, 3] += directions @ shift_mm
    return new


def describe_grid(shape: Sequence[int], affine: np.ndarray) -> str:
    """A voxel grid in a few words: '181x217x181 voxels of 1x1x1 mm, RAS, first voxel at (-90, -126, -72) mm'
    ('RAS oblique' when an axis does not run along a patient axis within STEP_TOLERANCE_VOXELS)."""
    dims = len(shape)
    full = full_affine(affine, dims)
    units = axis_directions(full)[:, :dims]
    nearest = np.zeros_like(units)  # the patient axis each array axis runs closest to
    nearest[np.abs(units).argmax(axis=0), np.arange(dims)] = 1.0
    aligned = np.linalg.norm(np.abs(units) - nearest, axis=0).max() <= STEP_TOLERANCE_VOXELS
    codes = orientation_code(full)[:dims] + ("" if aligned else " oblique")
    origin = ", ".join(f"{v:.4g}" for v in full[:3, 3])
    spacing = "x".join(f"{v:.4g}" for v in spacing_mm(full, dims))
    return f"{'x'.join(str(n) for n in shape)} voxels of {spacing} mm, {codes}, first voxel at ({origin}) mm"


@dataclass(frozen=True)
class AxisMap:
    """A reordering of an array's spatial axes: output axis `a` is input axis `perm[a]`, reversed where
    `signs[a]` is -1. It moves voxels without interpolating any, and `apply_affine` gives the moved
    array's affine, so that every voxel keeps its position in space."""

    perm: tuple[int, ...]
    signs: tuple[int, ...]  # +1 or -1 per output axis

    def __post_init__(self):
        perm, signs = tuple(int(p) for p in self.perm), tuple(1 if s > 0 else -1 for s in self.signs)
        if sorted(perm) != list(range(len(perm))) or len(signs) != len(perm):
            raise ValueError(f"not an axis map: perm {perm}, signs {signs}")
        object.__setattr__(self, "perm", perm)
        object.__setattr__(self, "signs", signs)

    @classmethod
    def identity(cls, spatial_dims: int) -> AxisMap:
        """The map that leaves every axis as it is."""
        return cls(tuple(range(spatial_dims)), (1,) * spatial_dims)

    @property
    def is_identity(self) -> bool:
        return self.perm == tuple(range(len(self.perm))) and all(s > 0 for s in self.signs)

    def inverse(self) -> AxisMap:
        """The map that puts a moved array back: `m.inverse().apply(m.apply(x))` is `x`."""
        perm, signs = [0] * len(self.perm), [1] * len(self.perm)
        for a, (b, s) in enumerate(zip(self.perm, self.signs, strict=True)):
            perm[b], signs[b] = a, s
        return AxisMap(tuple(perm), tuple(signs))

    def moved_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial shape of the moved array, from the input's."""
        return tuple(int(shape[b]) for b in self.perm)

    def apply(self, array: Any) -> Any:
        """The moved array (a contiguous copy or view): numpy or torch, `[*spatial]` or with leading
        axes (`[C, *spatial]`); the map acts on the last len(perm) axes."""
        lead = array.ndim - len(self.perm)
        if lead < 0:
            raise ValueError(f"an array of {array.ndim} axes cannot take a map of {len(self.perm)} axes")
        order = [*range(lead), *(lead + b for b in self.perm)]
        flips = [lead + a for a, s in enumerate(self.signs) if s < 0]
        if isinstance(array, np.ndarray):
            moved = np.transpose(array, order)
            return np.ascontiguousarray(np.flip(moved, flips) if flips else moved)
        moved = array.permute(*order)  # a torch tensor
        return (moved.flip(flips) if flips else moved).contiguous()

    def apply_affine(self, affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        """The affine of the moved array, from the input's affine and spatial `shape`. A 4x4 affine, or a
        (d+1)x(d+1) one whose last column is the origin; columns the map does not touch are kept."""
        given = np.asarray(affine, dtype=np.float64)
        origin = given.shape[1] - 1
        moved = given.copy()
        for a, (b, s) in enumerate(zip(self.perm, self.signs, strict=True)):
            moved[:, a] = given[:, b] * s
            if s < 0:  # the moved array starts at the input's last voxel along b
                moved[:, origin] += given[:, b] * (int(shape[b]) - 1)
        return moved


class GridMismatch(ValueError):
    """Two grids that are not one grid in another voxel order; the message is the reason."""


def compare_grids(
    shape: Sequence[int], affine: np.ndarray, ref_shape: Sequence[int], ref_affine: np.ndarray
) -> AxisMap:
    """The axis map that moves an array on (`shape`, `affine`) exactly onto the reference grid.

    Both grids have the same number of axes (2D: a single slice whose normal is the third affine
    column). Raises `GridMismatch` with the first reason found: "the axes are not parallel", "the
    extents differ", "the spacing or direction differs" (beyond STEP_TOLERANCE_VOXELS), "the origins
    differ" (beyond ORIGIN_TOLERANCE_VOXELS).
    """
    dims = len(ref_shape)
    if len(shape) != dims or dims not in (2, 3):
        raise ValueError(f"grids of 2 or 3 axes each are compared, not {len(shape)} with {dims}")
    own, ref = [*shape, *[1] * (3 - dims)], [*ref_shape, *[1] * (3 - dims)]
    full, ref_full = full_affine(affine, dims), full_affine(ref_affine, dims)
    cosines = axis_directions(ref_full).T @ axis_directions(full)  # [reference axis, own axis]
    perm = [int(b) for b in np.abs(cosines).argmax(axis=1)]
    if sorted(perm) != [0, 1, 2] or perm[dims:] != list(range(dims, 3)):
        raise GridMismatch("the axes are not parallel")
    mapping = AxisMap(tuple(perm), tuple(1 if cosines[a, b] >= 0 else -1 for a, b in enumerate(perm)))
    if mapping.moved_shape(own) != tuple(ref):
        raise GridMismatch("the extents differ")
    moved = mapping.apply_affine(full, own)
    ref_mm = spacing_mm(ref_full)
    for a in range(3):
        step = moved[:3, a]
        if ref[a] == 1:  # a single slice: only its normal matters, not its thickness
            step = axis_directions(moved)[:, a] * ref_mm[a]
        if np.linalg.norm(step - ref_full[:3, a]) > STEP_TOLERANCE_VOXELS * ref_mm[a]:
            raise GridMismatch("the spacing or direction differs")
    in_plane = [ref_mm[a] for a in range(3) if ref[a] > 1] or ref_mm
    if np.linalg.norm(moved[:3, 3] - ref_full[:3, 3]) > ORIGIN_TOLERANCE_VOXELS * min(in_plane):
        raise GridMismatch("the origins differ")
    return AxisMap(mapping.perm[:dims], mapping.signs[:dims])


def axis_map_towards(affine: np.ndarray, directions: np.ndarray, spatial_dims: int) -> AxisMap:
    """The axis map after which the array's axes run as nearly as possible along `directions` (3 x n,
    columns: the wanted axes in RAS, the first `spatial_dims` used); the identity when no reordering
    gives each wanted axis its own array axis."""
    units = axis_directions(full_affine(affine, spatial_dims))[:, :spatial_dims]
    wanted = np.asarray(directions, dtype=np.float64)[:, :spatial_dims]
    similarity = wanted.T @ units  # [wanted axis, own axis]
    perm = [int(b) for b in np.abs(similarity).argmax(axis=1)]
    if sorted(perm) != list(range(spatial_dims)):
        return AxisMap.identity(spatial_dims)
    return AxisMap(tuple(perm), tuple(1 if similarity[a, b] >= 0 else -1 for a, b in enumerate(perm)))


def reorient_like(array: Any, affine: np.ndarray, directions: np.ndarray) -> tuple[Any, np.ndarray]:
    """`array` (`[C, *spatial]`, torch or numpy) with its axes permuted and flipped, exactly, to run
    along `directions` (see `axis_map_towards`), and its new 4x4 affine. Scans then reach a network
    in the storage order it was trained on."""
    dims = array.ndim - 1
    full = full_affine(affine, dims)
    mapping = axis_map_towards(full, directions, dims)
    return mapping.apply(array), mapping.apply_affine(full, array.shape[1:])
