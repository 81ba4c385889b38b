"""MR simulators: undersampling, Rician noise, Gibbs ringing, segmented motion and the bias field."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medgan.data.degradations import DEGRADATIONS
from medgan.data.degradations.mr import motion_kspace, reference_segment, to_image, to_kspace, undersampling_mask
from medgan.data.degradations.mr_fields import bias_field, reference_signal


def brain_like(shape=(48, 40), seed=0) -> torch.Tensor:
    """A positive blob with texture on a zero background, [1, 1, *shape]."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(g**2 for g in grids) < 0.6
    image = inside * (100.0 + 20.0 * rng.random(shape))
    return torch.from_numpy(image).float()[None, None]


@pytest.mark.parametrize("shape", [(48, 40), (20, 18, 12)])
def test_an_all_ones_mask_returns_the_input(shape):
    x = brain_like(shape)
    dims = list(range(2, 2 + len(shape)))
    assert torch.allclose(to_image(to_kspace(x, dims), dims).abs(), x, atol=1e-4)
    mask = undersampling_mask([shape[1]] if len(shape) == 2 else list(shape[1:]), acceleration=1.0)
    assert mask.all()
    y = DEGRADATIONS.build("mr-undersample", acceleration=1.0)(x, generator=0)[0]
    assert torch.allclose(y, x, atol=1e-4)


@pytest.mark.parametrize("pattern", ["random", "equispaced"])
def test_mask_acquires_one_line_in_r_with_the_centre_fully_sampled(pattern):
    mask = undersampling_mask([200], acceleration=4.0, center_fraction=0.08, pattern=pattern, seed=3)
    assert abs(int(mask.sum()) - 50) <= 2
    assert mask[100 - 8 : 100 + 8].all()
    if pattern == "equispaced":
        lines = mask.nonzero().squeeze(1).numpy()
        for side in (lines[lines < 92], lines[lines >= 108]):
            gaps = np.diff(side)
            assert gaps.max() - gaps.min() <= 1  # evenly spaced on either side of the centre
    assert torch.equal(mask, undersampling_mask([200], 4.0, 0.08, pattern, 1.0, seed=3))  # the seed decides


def test_partial_fourier_skips_the_start_of_k_space_and_3d_masks_cover_both_phase_axes():
    mask = undersampling_mask([64], acceleration=1.0, partial_fourier=0.75)
    assert not mask[:16].any() and mask[16:].all()
    plane = undersampling_mask([32, 24], acceleration=3.0, center_fraction=0.25, seed=1)
    assert plane.shape == (32, 24) and abs(int(plane.sum()) - 256) <= 1 and plane[12:20, 9:15].all()


def test_undersampling_blurs_and_aliases_but_keeps_the_centre_of_k_space():
    x = brain_like()
    y = DEGRADATIONS.build("mr-undersample", acceleration=4.0, pattern="equispaced")(x, generator=1)[0]
    assert (y - x).abs().mean() > 1.0
    kx, ky = to_kspace(x, [2, 3]), to_kspace(y.to(torch.complex64), [2, 3])
    assert abs(float(kx[0, 0, 24, 20].abs()) - float(ky[0, 0, 24, 20].abs())) < 0.2 * float(kx[0, 0, 24, 20].abs())


def test_rician_background_matches_the_rayleigh_mean_and_variance():
    x = torch.zeros(1, 1, 256, 256)
    x[..., 96:160, 96:160] = 200.0  # the reference signal is this square's value
    snr = 10.0
    y = DEGRADATIONS.build("mr-noise", snr=snr)(x, generator=0)[0]
    sigma = 200.0 / snr
    assert reference_signal(x[0]) == pytest.approx(200.0)
    background = y[0, 0][x[0, 0] == 0].double()
    assert float(background.mean()) == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.02)
    assert float(background.var()) == pytest.approx((2 - math.pi / 2) * sigma**2, rel=0.05)
    foreground = y[0, 0, 100:156, 100:156].double()
    assert float(foreground.mean()) == pytest.approx(math.sqrt(200.0**2 + sigma**2), rel=0.01)
    assert float(foreground.std()) == pytest.approx(sigma, rel=0.08)  # near Gaussian at high SNR
    assert (y >= 0).all()


def test_gibbs_truncation_overshoots_a_step_by_about_nine_percent():
    x = torch.zeros(1, 1, 128, 16)
    x[:, :, 32:96] = 100.0  # a box along axis 0, constant along axis 1
    assert torch.allclose(DEGRADATIONS.build("mr-gibbs", kept_fraction=1.0)(x)[0], x, atol=1e-3)
    y = DEGRADATIONS.build("mr-gibbs", kept_fraction=0.25)(x)[0]
    profile = y[0, 0, :, 8]
    overshoot = float(profile[32:96].max()) / 100.0 - 1.0
    assert 0.05 < overshoot < 0.13  # the Gibbs phenomenon: about 9% of the jump
    assert float(profile[:20].max()) > 1.0  # ringing outside the box too


def test_motion_without_displacement_is_the_identity():
    x = brain_like()
    y = DEGRADATIONS.build("mr-motion", rotation_deg=0.0, translation_mm=0.0)(x, spacing_mm=(1.0, 1.0), generator=0)[0]
    assert torch.allclose(y, x, atol=1e-3)


def test_motion_changes_only_the_k_space_segments_acquired_at_other_poses():
    image = brain_like()[0].double()  # [1, 48, 40]; the phase axis is 1 (readout 0)
    poses = [{"rotation_deg": [0.0], "translation_mm": [0.0, 0.0]} for _ in range(4)]
    poses[0] = {"rotation_deg": [3.0], "translation_mm": [0.0, 0.0]}
    poses[3] = {"rotation_deg": [0.0], "translation_mm": [1.5, -2.0]}
    record = {"segments": 4, "readout_axis": 0, "poses": poses}
    spacing = (1.0, 1.2)
    moved = motion_kspace(image, record, spacing)
    still = to_kspace(image, [1, 2])
    assert reference_segment(40, 4) == 2
    assert torch.equal(moved[..., 10:30], still[..., 10:30])  # segments 1 and 2 at rest
    assert not torch.allclose(moved[..., :10], still[..., :10])
    # a pure translation is a phase ramp exp(-2 pi i k.t), k in cycles/mm: checked with numpy
    ky = (np.arange(48) - 24)[:, None] / (48 * 1.0)
    kx = (np.arange(40) - 20)[None, :] / (40 * 1.2)
    ramp = np.exp(-2j * np.pi * (ky * 1.5 + kx * -2.0))
    assert np.allclose(moved[0, :, 30:].numpy(), still[0, :, 30:].numpy() * ramp[:, 30:], atol=1e-9)


def test_motion_degrades_more_with_more_severity():
    x = brain_like()
    errors = []
    for severity in (0.0, 1.0):
        y = DEGRADATIONS.build("mr-motion", severity=severity)(x, spacing_mm=(1.0, 1.0), generator=2)[0]
        errors.append(float((y - x).abs().mean()))
    assert errors[1] > 2 * errors[0] > 0


@pytest.mark.parametrize("shape", [(40, 36), (16, 14, 12)])
def test_bias_field_is_smooth_positive_and_spans_the_requested_range(shape):
    degradation = DEGRADATIONS.build("mr-bias", log_amplitude=0.4)
    record = degradation.sample(1, 7, spatial_dims=len(shape))[0]
    field = bias_field(shape, record["terms"], record["log_amplitude"], dtype=torch.float64)
    assert (field > 0).all()
    assert float(field.min()) == pytest.approx(math.exp(-0.4), rel=1e-9)
    assert float(field.max()) == pytest.approx(math.exp(0.4), rel=1e-9)
    log_field = field.log()
    for axis in range(len(shape)):
        second = torch.diff(log_field, n=2, dim=axis).abs().max()
        assert float(second) < 0.05  # a cubic over the grid: no voxel-scale structure
    x = torch.full((1, 2, *shape), 50.0)
    y = degradation.apply(x, [record])
    assert torch.allclose(y[0, 0], 50.0 * field.float(), rtol=1e-5) and torch.equal(y[0, 0], y[0, 1])


def test_bias_field_equals_the_polynomial_summed_term_by_term():
    from medgan.data.degradations.mr_fields import monomials

    shape = (13, 9, 7)
    terms = [[list(e), (i % 5 - 2) / 3] for i, e in enumerate(monomials(3, 3))]
    grids = torch.meshgrid(*[torch.linspace(-1, 1, n, dtype=torch.float64) for n in shape], indexing="ij")
    poly = sum(c * grids[0] ** e[0] * grids[1] ** e[1] * grids[2] ** e[2] for e, c in terms)
    reference = torch.exp(0.3 * (poly - (poly.max() + poly.min()) / 2) / ((poly.max() - poly.min()) / 2))
    torch.testing.assert_close(bias_field(shape, terms, 0.3, dtype=torch.float64), reference, rtol=0, atol=1e-12)
