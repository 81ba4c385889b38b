"""Where a lesion may go: inside the organ, a margin from its border, clear of every other lesion.

Candidates come from a coarse grid of cells (about 4 mm, fewer than ~1M cells whatever the scan's
size): a cell is kept when every cell within n of it (per axis) touches the organ, with n the
lesion's inscribed radius plus the margin over the cell diagonal. A centre whose ball of that radius
lies in the organ always sits in a kept cell, so no feasible place is missed; a random voxel of a
random kept cell is then checked exactly on the voxel grid: the lesion's label mask grown by the
margin (a ball, in mm) lies inside the organ and inside the image, and its footprint (every voxel it
changes, grown by the gap) meets no earlier lesion's footprint. Draws come from the caller's
generator, so placement is reproducible by seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medgan.lesions.grid import Box

__all__ = ["OrganMap", "clear", "fits", "organ_map", "pick_centre"]

_TARGET_CELLS = 1_000_000
_MIN_CELL_MM = 4.0


@dataclass
class OrganMap:
    """An organ mask and its coarse cells."""

    organ: Tensor  # bool, the image's grid
    cell: tuple[int, int, int]  # voxels per cell along each axis
    cell_diagonal_mm: float
    touches: Tensor  # bool per cell: some voxel of it is in the organ
    spacing_mm: tuple[float, float, float]
    _depth: Tensor | None = None

    @property
    def depth(self) -> Tensor:
        """Per cell, the largest n for which every cell within n of it (per axis) touches the organ (-1: none)."""
        if self._depth is None:
            depth = torch.full(self.touches.shape, -1, dtype=torch.int32, device=self.touches.device)
            n, grid, at = 0, self.touches, (0, 0, 0)
            while True:  # eroding by one cell n times is eroding by n cells (boxes add up)
                where = grid.nonzero()
                if len(where) == 0:
                    break
                lo, hi = where.amin(0).tolist(), where.amax(0).tolist()
                grid = grid[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]  # what is left, cut close
                at = tuple(a + b for a, b in zip(at, lo, strict=True))
                part = tuple(slice(a, a + m) for a, m in zip(at, grid.shape, strict=True))
                depth[part][grid] = n
                n += 1
                grid = _erode(grid, 1)
            self._depth = depth
        return self._depth

    def deepest_mm(self) -> float:
        """An upper bound on the radius of the largest ball that fits in the organ: from the coarse cells, and
        from the cells' extent along each voxel axis (a ball spans its diameter along every direction)."""
        n = int(self.depth.max()) + 1
        extents = []
        for axis, h in enumerate(self.spacing_mm):
            present = self.touches.any(dim=[a for a in range(3) if a != axis]).nonzero()
            cells = int(present.max()) - int(present.min()) + 1 if len(present) else 0
            extents.append(cells * self.cell[axis] * h)
        return min(n * self.cell_diagonal_mm, min(extents) / 2)

    def candidates(self, radius_mm: float) -> Tensor:
        """Cells that may hold the centre of a ball of `radius_mm` inside the organ: `[K, 3]` cell indices."""
        n = math.floor(radius_mm / self.cell_diagonal_mm)
        return (self.depth >= n).nonzero()


def organ_map(organ: Tensor, spacing_mm: Sequence[float]) -> OrganMap:
    """Coarse cells of a 3D bool organ mask, about `_MIN_CELL_MM` across (larger for huge scans)."""
    volume = math.prod(n * s for n, s in zip(organ.shape, spacing_mm, strict=True))
    side = max(_MIN_CELL_MM, (volume / _TARGET_CELLS) ** (1 / 3))
    cell = tuple(max(1, round(side / s)) for s in spacing_mm)
    touches = organ.view(torch.uint8) if organ.dtype == torch.bool else (organ != 0).view(torch.uint8)
    for axis in (2, 1, 0):  # one axis at a time, the last first: each step shrinks what the next reads
        touches = _block_max(touches, axis, cell[axis])
    touches = touches > 0
    diagonal = math.sqrt(sum((c * s) ** 2 for c, s in zip(cell, spacing_mm, strict=True)))
    return OrganMap(organ, cell, diagonal, touches, tuple(float(s) for s in spacing_mm))


def _block_max(values: Tensor, axis: int, size: int) -> Tensor:
    """The maximum over consecutive blocks of `size` along `axis` (a shorter last block where it does not divide)."""
    n = values.shape[axis]
    whole = n // size
    parts = []
    if whole:
        blocks = values.narrow(axis, 0, whole * size).unflatten(axis, (whole, size))
        parts.append(blocks.amax(axis + 1))
    if n % size:
        parts.append(values.narrow(axis, whole * size, n % size).amax(axis, keepdim=True))
    return torch.cat(parts, axis) if len(parts) > 1 else parts[0]


def _erode(grid: Tensor, n: int) -> Tensor:
    """Cells whose (2n+1)^3 neighbourhood lies wholly in `grid` (outside the grid counts as out)."""
    if n <= 0:
        return grid.clone()
    out = (~grid)[None, None].to(torch.float32)
    for axis in range(3):
        kernel = [1, 1, 1]
        kernel[axis] = 2 * n + 1
        out = F.max_pool3d(F.pad(out, _pad_for(axis, n), value=1.0), tuple(kernel), stride=1)
    return out[0, 0] < 0.5


def _pad_for(axis: int, n: int) -> list[int]:
    pad = [0] * 6
    pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = n
    return pad


def pick_centre(organ_cells: OrganMap, cells: Tensor, rng: np.random.Generator) -> tuple[int, int, int] | None:
    """A random organ voxel in a random one of `cells` (None when the draw misses the organ)."""
    if len(cells) == 0:
        return None
    cell = cells[int(rng.integers(len(cells)))].tolist()
    lo = [c * k for c, k in zip(cell, organ_cells.cell, strict=True)]
    hi = [min(a + k, n) for a, k, n in zip(lo, organ_cells.cell, organ_cells.organ.shape, strict=True)]
    block = organ_cells.organ[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    inside = block.nonzero()
    if len(inside) == 0:
        return None
    voxel = inside[int(rng.integers(len(inside)))].tolist()
    return tuple(int(a + v) for a, v in zip(lo, voxel, strict=True))


def fits(box: Box, grown: Tensor, organ: Tensor) -> bool:
    """Whether `grown` (the lesion's mask grown by the margin, on `box`) lies inside the organ and the image."""
    inner, outer = box.inner, box.outer
    if box.clipped:
        outside = torch.ones_like(grown)
        outside[inner] = False
        if bool((grown & outside).any()):
            return False
    return not bool((grown[inner] & ~organ[outer]).any())


def clear(box: Box, footprint: Tensor, occupied: Tensor) -> bool:
    """Whether `footprint` (on `box`) meets no voxel of `occupied` (`box.outer`'s voxels other lesions changed)."""
    return not bool((footprint[box.inner] & occupied).any())
