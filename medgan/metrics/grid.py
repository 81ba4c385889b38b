"""Put a test image on its reference's voxel grid, exactly or not at all.

Paired metrics compare voxel i of the test image with voxel i of the reference, so both must sample
the same points in space. Two images can store the same grid in different voxel orders (LPS vs
RAS, axes swapped): the test array is then transposed and flipped onto the reference's order, which
moves voxels without interpolating any. Any other difference (spacing, origin, an oblique or
rotated grid, a different extent) is refused: resampling would change the numbers being measured.

Affines map voxel indices to millimetres (RAS), one column per array axis plus the origin column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Grid", "GridMismatch", "align"]

DIRECTION_TOLERANCE = 1e-3  # relative to the voxel size: 0.5 voxel drift across 500 voxels
ORIGIN_TOLERANCE = 0.05  # in voxels (the reference's smallest spacing)


@dataclass(frozen=True)
class Grid:
    """An array's shape and its 4 x 4 voxel-to-world affine (RAS, mm)."""

    shape: tuple[int, ...]
    affine: np.ndarray

    @classmethod
    def of(cls, shape, affine) -> Grid:
        """The grid of an array with `shape` (2 or 3 spatial axes) and a (d+1) x (d+1) affine."""
        shape = tuple(int(n) for n in shape) + (1,) * (3 - len(shape))
        given = np.asarray(affine, dtype=np.float64)
        full = np.eye(4)
        d = given.shape[0] - 1
        full[:d, :d], full[:d, 3] = given[:d, :d], given[:d, d]
        return cls(shape, full)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def codes(self) -> str:
        """The axis codes of the voxel order ("LPS": i runs to the left, j to posterior, k to superior)."""
        from medgan.io.geometry import orientation_code

        return orientation_code(self.affine)

    def describe(self) -> str:
        """One phrase: shape, spacing, orientation and the first voxel's position (as training describes grids)."""
        from medgan.data.transforms import describe_grid

        return describe_grid(self.shape, self.affine)


class GridMismatch(ValueError):
    """The two grids are not one grid in another voxel order."""


def align(array: np.ndarray, grid: Grid, reference: Grid) -> tuple[np.ndarray, bool]:
    """`array` (on `grid`) reordered onto `reference`'s voxel order, and whether it was reordered.

    Raises GridMismatch when no transpose and flips make the grids agree within the tolerances.
    """
    data = array.reshape(grid.shape)
    columns, wanted = grid.affine[:3, :3], reference.affine[:3, :3]
    unit = columns / np.maximum(grid.spacing, 1e-12)
    wanted_unit = wanted / np.maximum(reference.spacing, 1e-12)
    cosines = wanted_unit.T @ unit  # [reference axis, grid axis]
    order = [int(i) for i in np.argmax(np.abs(cosines), axis=1)]
    if sorted(order) != [0, 1, 2]:
        raise GridMismatch("the axes are not parallel")
    signs = np.sign(cosines[np.arange(3), order])
    data = np.transpose(data, order)
    corner = np.zeros(3)
    for axis, (source, sign) in enumerate(zip(order, signs, strict=True)):
        if sign < 0:
            data = np.flip(data, axis)
            corner[source] = grid.shape[source] - 1
    moved = columns[:, order] * signs
    origin = columns @ corner + grid.affine[:3, 3]
    if data.shape != reference.shape:
        raise GridMismatch("the extents differ")
    for axis in range(3):
        if reference.shape[axis] == 1:  # a single slice: only the plane's normal matters, not its thickness
            close = abs(abs(cosines[axis, order[axis]]) - 1.0) <= DIRECTION_TOLERANCE
        else:
            error = np.linalg.norm(moved[:, axis] - wanted[:, axis])
            close = error <= DIRECTION_TOLERANCE * reference.spacing[axis]
        if not close:
            raise GridMismatch("the spacing or direction differs")
    in_plane = [reference.spacing[a] for a in range(3) if reference.shape[a] > 1] or list(reference.spacing)
    if np.linalg.norm(origin - reference.affine[:3, 3]) > ORIGIN_TOLERANCE * min(in_plane):
        raise GridMismatch("the origins differ")
    reordered = order != [0, 1, 2] or bool((signs < 0).any())
    return np.ascontiguousarray(data), reordered
