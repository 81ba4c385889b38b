"""Voxel-to-world geometry. The one place where DICOM/ITK LPS meets medgan's RAS.

medgan arrays are indexed `[C, i, j, k]`; `affine @ [i, j, k, 1]` gives the voxel centre in
RAS millimetres (x to the patient's Right->Left is negative, as in NIfTI and MONAI).
DICOM and ITK store positions in LPS; `LPS_TO_RAS` flips the first two axes and is its own
inverse. For a DICOM slice, `i` runs along a row (increasing column index) and `j` down the
columns (increasing row index), so pixel arrays `(rows, cols)` are transposed to `(i, j)`.
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import aff2axcodes

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

__all__ = [
    "LPS_TO_RAS",
    "affine_from_dicom",
    "affine_from_sitk",
    "flip_lps_ras",
    "is_sheared",
    "orientation_code",
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
    lps = flip_lps_ras(affine)
    columns = lps[:dim, :dim]
    spacing = np.linalg.norm(columns, axis=0)
    direction = columns / spacing
    if is_sheared(affine):
        raise ValueError("the affine is sheared (e.g. gantry tilt); ITK images cannot store it")
    return tuple(direction.ravel()), tuple(spacing), tuple(lps[:dim, 3])


def spacing_mm(affine: np.ndarray) -> np.ndarray:
    """Voxel size along each array axis: the lengths of the affine's first three columns."""
    return np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)


def is_sheared(affine: np.ndarray, tol: float = 1e-4) -> bool:
    """True when the voxel axes are not mutually orthogonal (gantry tilt, irregular stacks)."""
    columns = np.asarray(affine, float)[:3, :3]
    unit = columns / np.linalg.norm(columns, axis=0)
    gram = unit.T @ unit
    return bool(np.abs(gram - np.eye(3)).max() > tol)


def orientation_code(affine: np.ndarray) -> str:
    """Three letters naming where each array axis points, e.g. 'RAS' or 'LPS' (nibabel's convention)."""
    return "".join(c or "?" for c in aff2axcodes(np.asarray(affine, float)))
