"""The scan estimators against images of known blur and noise, and the distance map against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _lesion_phantom import BLUR_MM, NOISE_CORR_MM, NOISE_SD, SPACING, _correlated, blob_phantom, ct_phantom
from scipy import ndimage

from medgan.lesions.grid import dilate, distance_mm
from medgan.lesions.measure import estimate_blur, estimate_noise, measure_lesion

NOISE_CASES = [  # (spacing, correlation length) in mm per axis
    ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
    ((0.7, 0.7, 2.5), (0.7, 0.7, 1.5)),
    ((0.5, 0.8, 1.0), (1.2, 0.4, 0.9)),
]


@pytest.mark.parametrize(("spacing", "corr_mm"), NOISE_CASES)
def test_noise_sd_and_correlation_length(spacing, corr_mm):
    g = torch.Generator().manual_seed(3)
    shape = (70, 60, 40)
    noise = _correlated(shape, [c / s for c, s in zip(corr_mm, spacing, strict=True)], g) * 20.0
    x = torch.arange(shape[0], dtype=torch.float32)[:, None, None] * spacing[0]
    image = 300.0 + 1.5 * x + noise  # a smooth trend under the noise: second differences cancel it
    found = estimate_noise(image, torch.ones(shape, dtype=torch.bool), spacing)
    assert found.sd == pytest.approx(20.0, rel=0.06)
    for got, want, h in zip(found.corr_mm, corr_mm, spacing, strict=True):
        assert abs(got - want) <= 0.15 * want + 0.3 * h  # coarse when the correlation is well below a voxel


def test_noise_in_the_phantoms_organ():
    image, organ = ct_phantom()
    found = estimate_noise(image.float(), organ, SPACING)
    assert found.sd == pytest.approx(NOISE_SD, rel=0.1)
    for got, want in zip(found.corr_mm[:2], NOISE_CORR_MM[:2], strict=True):
        assert got == pytest.approx(want, rel=0.2)


def test_too_small_a_region_gives_no_noise_estimate():
    image = torch.randn(20, 20, 20)
    region = torch.zeros(20, 20, 20, dtype=torch.bool)
    region[5:8, 5:8, 5:8] = True
    assert estimate_noise(image, region, (1.0, 1.0, 1.0)) is None


@pytest.mark.parametrize(("spacing", "blur"), [((1.0, 1.0, 1.0), (0.6, 0.6, 0.6)), ((0.7, 0.7, 2.0), (0.8, 0.8, 1.0)),
                                              ((0.8, 0.8, 3.0), (1.5, 1.5, 0.6))])  # fmt: skip
def test_blur_from_edges(spacing, blur):
    image = blob_phantom(spacing, blur, 5.0, (0.5, 0.5, 0.5))
    found = estimate_blur(image, spacing)
    assert all(n >= 50 for n in found.edges)
    for got, want, h in zip(found.sigma_mm, blur, spacing, strict=True):
        # curved and crowded edges read a little blurrier, never much sharper; a blur well under a thick
        # slice cannot be told apart from the slice's own partial volume
        assert 0.85 * want <= got <= max(1.3 * want, 0.6 * h)


def test_blur_in_the_phantom_and_its_default():
    image, _ = ct_phantom()
    found = estimate_blur(image.float(), SPACING)
    for got, want in zip(found.sigma_mm[:2], BLUR_MM[:2], strict=True):
        assert got == pytest.approx(want, rel=0.2)
    flat = estimate_blur(torch.zeros(30, 30, 30), (1.0, 1.0, 1.5))  # no edges: half a voxel per axis
    assert flat.edges == (0, 0, 0) and flat.sigma_mm == (0.5, 0.5, 0.75)
    thick = estimate_blur(torch.zeros(30, 30, 30), (1.0, 1.0, 5.0))  # a thick-slice axis: no blurrier than in-plane
    assert thick.sigma_mm == (0.5, 0.5, 0.5)


def test_distance_map_matches_scipy():
    mask = torch.rand(31, 27, 13, generator=torch.Generator().manual_seed(0)) > 0.995
    spacing = (0.7, 0.9, 2.5)
    reference = ndimage.distance_transform_edt(~mask.numpy(), sampling=spacing)
    assert np.abs(distance_mm(mask, spacing).numpy() - reference).max() < 1e-4
    capped = distance_mm(mask, spacing, 4.0).numpy()
    near = reference <= 4.0
    assert np.abs(capped[near] - reference[near]).max() < 1e-4 and np.isinf(capped[reference > 4.0 + 1e-4]).all()
    assert torch.equal(dilate(mask, 3.0, spacing), torch.from_numpy(reference <= 3.0 + 1e-6))


def test_measure_lesion_against_numpy():
    spacing = np.array([0.8, 0.8, 2.0])
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip((60, 60, 24), spacing, strict=True)],
                                indexing="ij"), -1)  # fmt: skip
    mask = (((grid - [24.0, 24.0, 24.0]) / [12.0, 8.0, 6.0]) ** 2).sum(-1) <= 1
    found = measure_lesion(torch.from_numpy(mask), np.diag(spacing))
    points = grid[mask]
    longest = max(np.sqrt(((points[i] - points) ** 2).sum(-1)).max() for i in range(len(points)))
    assert found["voxels"] == mask.sum()
    assert found["volume_ml"] == pytest.approx(mask.sum() * np.prod(spacing) / 1000)
    assert found["equivalent_diameter_mm"] == pytest.approx((6 * found["volume_ml"] * 1000 / math.pi) ** (1 / 3))
    assert found["longest_diameter_mm"] == pytest.approx(longest, rel=0.002)
