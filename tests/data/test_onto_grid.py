"""Training pairs take the grid comparison of `medgan.io.geometry` (the one evaluation uses): a grid
that compares equal is reordered exactly, any other is resampled (linear for images, nearest label
for label maps). Expected values are worked out here with numpy from the affines."""

from __future__ import annotations

import numpy as np
import torch

from medgan.data.transforms import onto_grid
from medgan.io.geometry import ORIGIN_TOLERANCE_VOXELS

AFFINE = np.array([[-0.8, 0, 0, 40.0], [0, -0.8, 0, 30.0], [0, 0, 2.5, -20.0], [0, 0, 0, 1]])  # LPS, as DICOM


def ramp(shape) -> torch.Tensor:
    """Values that change linearly along every axis, so linear resampling can be checked exactly."""
    i, j, k = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return torch.from_numpy(100.0 * i + 10.0 * j + k).float()[None]


def test_a_reordered_copy_within_the_tolerances_is_moved_exactly_not_interpolated():
    image = ramp((6, 5, 4))
    stored = image.permute(0, 2, 1, 3).flip(3)  # axes i and j swapped, k reversed
    affine = AFFINE[:, [1, 0, 2, 3]].copy()
    affine[:3, 2] *= -1
    affine[:3, 3] = AFFINE[:3, :3] @ [0, 0, 3] + AFFINE[:3, 3]
    affine[:3, 3] += [0.5 * ORIGIN_TOLERANCE_VOXELS * 0.8, 0, 0]  # inside the tolerance: still the same grid
    out = onto_grid(stored.contiguous(), affine, (6, 5, 4), AFFINE)
    assert torch.equal(out, image)


def test_a_grid_half_a_voxel_away_is_resampled_linearly():
    image = ramp((6, 5, 4))
    shifted = AFFINE.copy()
    shifted[:3, 3] += AFFINE[:3, 0] * 0.5  # the array's voxel i sits at the reference's i + 0.5
    out = onto_grid(image, shifted, (6, 5, 4), AFFINE)
    # Reference voxel i lies at the array's i - 0.5: the mean of its neighbours, 50 below; the first
    # plane lies outside the array's centres but inside its first voxel, so it takes that voxel (border).
    np.testing.assert_allclose(out[0, 1:].numpy(), image[0, 1:].numpy() - 50.0, atol=1e-4)
    np.testing.assert_allclose(out[0, 0].numpy(), image[0, 0].numpy(), atol=1e-4)


def test_a_2d_label_map_stored_transposed_is_moved_exactly():
    labels = torch.arange(12).reshape(1, 3, 4)
    flat = np.diag([0.5, 0.7, 0.0, 1.0])  # a 2D reader's 4x4 affine without a slice column
    stored = flat[:, [1, 0, 2, 3]]
    out = onto_grid(labels.transpose(1, 2).contiguous(), stored, (3, 4), flat, labels=True)
    assert torch.equal(out, labels) and out.dtype == labels.dtype
