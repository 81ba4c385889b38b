"""Placement: inside the organ with the margin, apart from each other, reproducible; one clear error when
lesions cannot fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medgan.errors import InputError
from medgan.lesions.grid import Box
from medgan.lesions.insert import simulate_lesions
from medgan.lesions.models import LESION_MODELS
from medgan.lesions.placement import organ_map

SPACING = (1.0, 1.0, 2.0)
AFFINE = np.diag([*SPACING, 1.0])


def _ball_organ(radius_mm: float, shape=(60, 60, 30)) -> tuple[torch.Tensor, torch.Tensor]:
    axes = [torch.arange(n, dtype=torch.float32) * s for n, s in zip(shape, SPACING, strict=True)]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    centre = [(n - 1) * s / 2 for n, s in zip(shape, SPACING, strict=True)]
    organ = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= radius_mm**2
    g = torch.Generator().manual_seed(0)
    image = torch.where(organ, 50.0, -100.0) + 5 * torch.randn(shape, generator=g)
    return image, organ


def test_many_small_lesions_are_inside_and_apart():
    image, organ = _ball_organ(27.0)
    model = LESION_MODELS.build("generic", diameter_mm=(4, 7))
    result = simulate_lesions(image, organ, affine=AFFINE, modality="CT", n=6, model=model, seed=3, margin_mm=3.0)
    labels = result.labels.numpy()
    inside = ndimage.distance_transform_edt(organ.numpy(), sampling=SPACING)
    assert sorted(np.unique(labels))[1:] == list(range(1, 7))
    for label in range(1, 7):
        mask = labels == label
        assert inside[mask].min() > 3.0
        others = (labels > 0) & ~mask
        assert ndimage.distance_transform_edt(~mask, sampling=SPACING)[others].min() > 2.0


def test_an_empty_organ_is_refused():
    image, organ = _ball_organ(20.0)
    with pytest.raises(InputError, match="organ mask is empty"):
        simulate_lesions(image, torch.zeros_like(organ), affine=AFFINE, n=1)


def test_a_diameter_larger_than_the_organ_is_refused():
    image, organ = _ball_organ(8.0)
    with pytest.raises(InputError, match=r"lesions up to 40 mm across do not fit in the organ"):
        simulate_lesions(image, organ, affine=AFFINE, n=1, model=LESION_MODELS.build("generic", diameter_mm=(30, 40)))


def test_lesions_that_cannot_all_fit_are_refused():
    image, organ = _ball_organ(14.0)
    model = LESION_MODELS.build("generic", diameter_mm=(12, 12))
    with pytest.raises(InputError, match=r"lesion \d of 5 \(12.0 mm\) does not fit"):
        simulate_lesions(image, organ, affine=AFFINE, n=5, model=model, max_tries=30)


def test_candidate_cells_never_miss_a_feasible_centre():
    """Every voxel whose ball of radius r lies in the organ sits in a candidate cell for r."""
    _, organ = _ball_organ(20.0)
    cells = organ_map(organ, SPACING)
    depth = ndimage.distance_transform_edt(organ.numpy(), sampling=SPACING)
    for radius in (3.0, 8.0, 14.0):
        feasible = np.argwhere(depth > radius)
        kept = {tuple(c) for c in cells.candidates(radius).tolist()}
        assert all(tuple(int(v) // k for v, k in zip(p, cells.cell, strict=True)) in kept for p in feasible)
        assert cells.deepest_mm() >= depth.max() - 1.0


def test_box_slices_meet_the_image():
    box = Box((2, 5, 9), (4, 4, 4), (20, 20, 10))
    assert box.outer == (slice(0, 7), slice(1, 10), slice(5, 10))
    assert box.inner == (slice(2, 9), slice(0, 9), slice(0, 5))
    assert box.clipped
