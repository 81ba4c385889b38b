"""Thick slices and downsampling: averaging checked with numpy, and the output affine's spacing and origin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from medgan.data.degradations import DEGRADATIONS, degrade_image
from medgan.errors import ConfigError
from medgan.io.geometry import spacing_mm
from medgan.io.image import make_image


def oblique_affine(spacing) -> np.ndarray:
    """A rotated RAS affine with the given voxel spacing and an arbitrary origin."""
    angle = np.radians(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = [-40.0, 12.5, 7.0]
    return affine


def world(affine, index) -> np.ndarray:
    return (affine @ np.r_[np.asarray(index, float), 1.0])[:3]


def test_box_thick_slices_average_consecutive_slices_and_the_affine_follows():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(1, 10, 12, 17)).astype(np.float32)
    affine = oblique_affine([0.8, 0.8, 1.0])
    image = make_image(volume, affine, {"modality": "MR"})
    out, record = degrade_image(image, "thick-slices", thickness_mm=3.0)
    expected = volume[..., :15].reshape(1, 10, 12, 5, 3).mean(axis=-1)  # 17 slices -> 5 of 3 (the rest dropped)
    assert record["axis"] == 2 and record["slice_spacing_mm"] == 3.0
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    new_affine = np.asarray(out.affine)
    assert spacing_mm(new_affine) == pytest.approx([0.8, 0.8, 3.0])
    np.testing.assert_allclose(new_affine[:3, :3] / spacing_mm(new_affine), affine[:3, :3] / [0.8, 0.8, 1.0])
    # the first thick slice is centred where input slices 0, 1 and 2 were on average
    np.testing.assert_allclose(world(new_affine, [3, 4, 0]), world(affine, [3, 4, 1]), atol=1e-9)
    assert out.meta["degradation"]["output_shape"] == [10, 12, 5]


def overlap_weights(n_in, step, centre, width):
    """Independent reference: overlap of each input voxel [k step - step/2, k step + step/2] with the box."""
    weights = []
    for k in range(n_in):
        low, high = k * step - step / 2, k * step + step / 2
        weights.append(max(0.0, min(high, centre + width / 2) - max(low, centre - width / 2)))
    return np.array(weights) / width


def test_non_integer_thickness_and_a_gap_weigh_partial_voxels():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(1, 1, 6, 20))).double()
    degradation = DEGRADATIONS.build("thick-slices", thickness_mm=3.75, slice_spacing_mm=4.5, axis=1)
    record = degradation.sample(1, 0, spacing_mm=(1.0, 1.5))[0]
    y = degradation.apply(x, [record], (1.0, 1.5))
    step, width, between = 1.5, 3.75, 4.5
    count = int(np.floor((20 * step - width) / between)) + 1
    assert y.shape == (1, 1, 6, count)
    for m in range(count):
        centre = (width - step) / 2 + m * between
        reference = x[0, 0].numpy() @ overlap_weights(20, step, centre, width)
        np.testing.assert_allclose(y[0, 0, :, m].numpy(), reference, atol=1e-12)


def test_gaussian_profile_matches_normal_cdf_integrals():
    x = torch.zeros(1, 1, 4, 30, dtype=torch.float64)
    x[..., 15] = 1.0  # an impulse: the output samples the profile itself
    degradation = DEGRADATIONS.build("thick-slices", thickness_mm=4.0, profile="gaussian", axis=1)
    record = degradation.sample(1, 0, spacing_mm=(1.0, 1.0))[0]
    y = degradation.apply(x, [record], (1.0, 1.0))[0, 0, 0].numpy()
    sd = 4.0 / (2 * np.sqrt(2 * np.log(2)))
    for m, value in enumerate(y):
        centre = 1.5 + m * 4.0
        weights = norm.cdf((np.arange(30) + 0.5 - centre) / sd) - norm.cdf((np.arange(30) - 0.5 - centre) / sd)
        assert value == pytest.approx(weights[15] / weights.sum(), abs=1e-12)


def test_downsample_coarsens_in_plane_keeps_constants_and_factor_one_is_identity():
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(1, 16, 12, 5)).astype(np.float32)
    affine = oblique_affine([0.5, 0.5, 2.0])
    image = make_image(volume, affine, {"modality": "MR"})
    out, record = degrade_image(image, "downsample", factor=2.0)
    assert record["slice_axis"] == 2 and out.shape == (1, 8, 6, 5)
    new_affine = np.asarray(out.affine)
    assert spacing_mm(new_affine) == pytest.approx([1.0, 1.0, 2.0])
    np.testing.assert_allclose(world(new_affine, [0, 0, 0]), world(affine, [0.5, 0.5, 0]), atol=1e-9)
    same, _ = degrade_image(image, "downsample", factor=1.0)
    np.testing.assert_allclose(same.numpy(), volume, atol=1e-6)
    flat, _ = degrade_image(make_image(np.full((1, 16, 12, 5), 7.0, np.float32), affine, {}), "downsample", factor=3.0)
    np.testing.assert_allclose(flat.numpy(), 7.0, atol=1e-5)
    smooth = out.numpy()
    assert smooth.std() < volume.std()  # averaging lowers white noise


def test_back_to_input_grid_keeps_shape_and_affine():
    volume = np.linspace(0, 1, 8 * 8 * 12, dtype=np.float32).reshape(1, 8, 8, 12)
    affine = oblique_affine([1.0, 1.0, 1.0])
    image = make_image(volume, affine, {})
    out, _ = degrade_image(image, "thick-slices", thickness_mm=4.0, back_to_input_grid=True)
    assert out.shape == image.shape
    np.testing.assert_allclose(np.asarray(out.affine), affine)
    np.testing.assert_allclose(out.numpy()[..., 2:10], volume[..., 2:10], atol=1e-5)  # a ramp survives averaging


def test_thickness_thinner_than_the_slices_or_wider_than_the_volume_fails_with_one_line():
    x = torch.zeros(1, 1, 8, 6)
    for thickness, words in ((1.0, "thinner"), (40.0, "exceeds")):
        degradation = DEGRADATIONS.build("thick-slices", thickness_mm=thickness)
        with pytest.raises(ConfigError, match=words):
            degradation.apply(x, degradation.sample(1, 0, spacing_mm=(1.0, 2.0)), (1.0, 2.0))
