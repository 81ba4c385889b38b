"""Put a test image on its reference's voxel grid, exactly or not at all.

Paired metrics compare voxel i of the test image with voxel i of the reference, so both must sample
the same points in space. Two images can store the same grid in different voxel orders (LPS vs
RAS, axes swapped): the test array is then transposed and flipped onto the reference's order, which
moves voxels without interpolating any. Any other difference (spacing, origin, an oblique or
rotated grid, a different extent) is refused: resampling would change the numbers being measured.

The comparison and its tolerances are `medgan.io.geometry.compare_grids`, the one training uses to
pair images; here every image is a 3D grid (a 2D image is a single slice), so that a 2D reference
and a one-slice volume compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medgan.io.geometry import compare_grids, describe_grid, full_affine, orientation_code

__all__ = ["Grid", "align"]


@dataclass(frozen=True)
class Grid:
    """An image's shape as three axes (a 2D image is one slice) and its 4 x 4 voxel-to-world affine (RAS, mm)."""

    shape: tuple[int, ...]
    affine: np.ndarray

    @classmethod
    def of(cls, shape, affine) -> Grid:
        """The grid of an array with `shape` (2 or 3 spatial axes) and a 4 x 4 or (d+1) x (d+1) affine."""
        full = full_affine(affine, len(shape))
        return cls(tuple(int(n) for n in shape) + (1,) * (3 - len(shape)), full)

    @property
    def codes(self) -> str:
        """The axis codes of the voxel order ("LPS": i runs to the left, j to posterior, k to superior)."""
        return orientation_code(self.affine)

    def describe(self) -> str:
        """One phrase: shape, spacing, orientation and the first voxel's position (as training describes grids)."""
        return describe_grid(self.shape, self.affine)


def align(array: np.ndarray, grid: Grid, reference: Grid) -> tuple[np.ndarray, bool]:
    """`array` (on `grid`) reordered onto `reference`'s voxel order, and whether it was reordered.

    Raises `medgan.io.geometry.GridMismatch` when no transpose and flips make the grids agree.
    """
    mapping = compare_grids(grid.shape, grid.affine, reference.shape, reference.affine)
    return mapping.apply(array.reshape(grid.shape)), not mapping.is_identity
