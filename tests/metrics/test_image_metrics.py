"""Paired metrics against independent references: scikit-image for PSNR/SSIM/NRMSE (2D and 3D),
a numpy/scipy transcription of Wang, Simoncelli and Bovik 2003 for MS-SSIM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _metrics_data import head_ct_slices
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve

from medgan.errors import ConfigError, InputError
from medgan.metrics.image import (
    MS_SSIM_WEIGHTS,
    PAIRED_METRICS,
    mae,
    max_ms_ssim_scales,
    ms_ssim,
    ms_ssim_weights,
    nrmse,
    psnr,
    rmse,
    ssim,
)

skimage_metrics = pytest.importorskip("skimage.metrics")
RTOL = 1e-4


def pair(shape, seed=0, noise=0.08, scale=1000.0, offset=-300.0):
    """A smooth random 'anatomy' in HU-like units and a noisy, slightly blurred copy of it."""
    rng = np.random.default_rng(seed)
    clean = gaussian_filter(rng.normal(size=shape), 3.0)
    clean = (clean - clean.min()) / np.ptp(clean) * scale + offset
    test = gaussian_filter(clean, 0.7) + rng.normal(scale=noise * scale, size=shape)
    return clean, test


def ssim_reference(x, y, data_range, mask=None):
    score, full = skimage_metrics.structural_similarity(
        x, y, data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True
    )
    if mask is None:
        return score
    crop = tuple(slice(5, n - 5) for n in x.shape)  # skimage averages the map inside a 5-voxel border
    return full[crop][mask[crop]].mean()


@pytest.mark.parametrize("shape", [(96, 80), (40, 48, 36)], ids=["2d", "3d"])
def test_ssim_and_psnr_match_scikit_image(shape):
    x, y = pair(shape)
    data_range = 2000.0
    assert float(ssim(x, y, data_range)) == pytest.approx(ssim_reference(x, y, data_range), rel=RTOL)
    expected_psnr = skimage_metrics.peak_signal_noise_ratio(x, y, data_range=data_range)
    assert float(psnr(x, y, data_range)) == pytest.approx(expected_psnr, rel=RTOL)


@pytest.mark.parametrize("shape", [(96, 80), (40, 48, 36)], ids=["2d", "3d"])
def test_masked_ssim_averages_the_map_inside_the_mask(shape):
    x, y = pair(shape, seed=3)
    mask = np.zeros(shape, bool)
    mask[tuple(slice(n // 4, 3 * n // 4) for n in shape)] = True
    assert float(ssim(x, y, 1500.0, mask=mask)) == pytest.approx(ssim_reference(x, y, 1500.0, mask), rel=RTOL)
    assert float(ssim(x, y, 1500.0, mask=mask)) != pytest.approx(float(ssim(x, y, 1500.0)), rel=1e-3)


def test_ssim_on_a_real_ct_slice_in_hu():
    x = head_ct_slices()[60].astype(np.float64)
    y = gaussian_filter(x, 1.0) + np.random.default_rng(1).normal(0, 30, x.shape)
    expected = ssim_reference(x, y, 4095.0)
    assert float(ssim(x, y, 4095.0)) == pytest.approx(expected, rel=RTOL)
    # float32 input (as read from disk) stays within tolerance thanks to the shift before the moments
    assert float(ssim(x.astype(np.float32), y.astype(np.float32), 4095.0)) == pytest.approx(expected, rel=RTOL)


def test_mae_rmse_nrmse_match_numpy_and_scikit_image():
    x, y = pair((64, 64), seed=5)
    assert float(mae(x, y)) == pytest.approx(np.abs(x - y).mean(), rel=RTOL)
    assert float(rmse(x, y)) == pytest.approx(np.sqrt(((x - y) ** 2).mean()), rel=RTOL)
    expected = skimage_metrics.normalized_root_mse(x, y, normalization="min-max")
    assert float(nrmse(x, y, data_range=np.ptp(x))) == pytest.approx(expected, rel=RTOL)
    mask = x > np.median(x)
    assert float(mae(x, y, mask=mask)) == pytest.approx(np.abs(x - y)[mask].mean(), rel=RTOL)
    expected_masked = 10 * np.log10(2000.0**2 / ((x - y)[mask] ** 2).mean())
    assert float(psnr(x, y, 2000.0, mask=mask)) == pytest.approx(expected_masked, rel=RTOL)


# --------------------------------------------------------------------- MS-SSIM, from the paper


def _gaussian_kernel(ndim):
    taps = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)
    taps /= taps.sum()
    kernel = taps
    for _ in range(ndim - 1):
        kernel = np.multiply.outer(kernel, taps)
    return kernel


def _halve_matlab(a):
    """imfilter(a, ones(2)/4, 'symmetric', 'same') followed by a(1:2:end, 1:2:end) (Wang's msssim.m)."""
    padded = np.pad(a, [(0, 1)] * a.ndim, mode="symmetric")
    out = np.zeros(tuple((n + 1) // 2 for n in a.shape))
    for offsets in np.ndindex(*(2,) * a.ndim):
        out += padded[tuple(slice(o, o + 2 * m, 2) for o, m in zip(offsets, out.shape, strict=True))]
    return out / 2**a.ndim


def ms_ssim_reference(x, y, data_range, weights=MS_SSIM_WEIGHTS):
    """Wang, Simoncelli, Bovik 2003, eq. 7: prod_j c_j s_j ^ beta_j, times l_M ^ alpha_M, 'valid' windows."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    kernel = _gaussian_kernel(x.ndim)

    def filt(a):
        return fftconvolve(a, kernel, mode="valid")

    result = 1.0
    for j, w in enumerate(weights):
        mx, my = filt(x), filt(y)
        vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
        cs = (2 * cxy + c2) / (vx + vy + c2)
        if j == len(weights) - 1:
            lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            result *= (lum * cs).mean() ** w
        else:
            result *= cs.mean() ** w
            x, y = _halve_matlab(x), _halve_matlab(y)
    return result


@pytest.mark.parametrize("shape", [(192, 176), (181, 161)], ids=["even", "odd"])
def test_ms_ssim_matches_the_published_definition_2d(shape):
    x, y = pair(shape, seed=7, noise=0.05)
    assert max_ms_ssim_scales(shape) == 5
    assert float(ms_ssim(x, y, 2000.0)) == pytest.approx(ms_ssim_reference(x, y, 2000.0), rel=RTOL)


def test_ms_ssim_matches_the_published_definition_3d_with_fewer_scales():
    x, y = pair((48, 50, 45), seed=8, noise=0.05)
    weights = ms_ssim_weights(max_ms_ssim_scales(x.shape))
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0)
    assert float(ms_ssim(x, y, 2000.0, weights=weights)) == pytest.approx(
        ms_ssim_reference(x, y, 2000.0, weights), rel=RTOL
    )


def test_ms_ssim_names_the_minimum_size():
    x, y = pair((128, 128), seed=1)
    with pytest.raises(InputError, match=r"5 scales needs at least 161 voxels.*ms_ssim_weights\(4\)"):
        ms_ssim(x, y, 2000.0)


# ----------------------------------------------------------------------------- conventions


def test_batched_input_keeps_the_batch_shape():
    x, y = pair((3, 2, 64, 64), seed=2)
    batched = ssim(torch.from_numpy(x), torch.from_numpy(y), 2000.0, spatial_dims=2)
    assert batched.shape == (3, 2)
    assert float(batched[1, 0]) == pytest.approx(ssim_reference(x[1, 0], y[1, 0], 2000.0), rel=RTOL)


@pytest.mark.parametrize("name", PAIRED_METRICS.names())
def test_every_paired_metric_prefers_the_closer_image(name):
    x, y = pair((176, 176), seed=4)
    closer = x + (y - x) * 0.3
    metric = PAIRED_METRICS.get(name)
    kwargs = {"data_range": 2000.0} if name in ("psnr", "ssim", "ms_ssim", "nrmse") else {}
    far, near = float(metric(x, y, **kwargs)), float(metric(x, closer, **kwargs))
    higher_is_better = name in ("psnr", "ssim", "ms_ssim")
    assert (near > far) if higher_is_better else (near < far)
    perfect = float(metric(x, x, **kwargs))
    assert perfect == (np.inf if name == "psnr" else 1.0 if higher_is_better else 0.0)


def test_data_range_is_required_and_checked():
    x, y = pair((32, 32))
    with pytest.raises(TypeError):
        psnr(x, y)  # no default on purpose: guessing the range is the classic bug
    with pytest.raises(ConfigError, match="data_range must be a positive number"):
        ssim(x, y, 0.0)


def test_shape_and_size_errors_are_one_line():
    x, _ = pair((32, 32))
    with pytest.raises(InputError, match="differ in shape: 32x32 vs 32x31"):
        ssim(x, x[:, :31], 1.0)
    with pytest.raises(InputError, match="SSIM needs at least 11 voxels along every axis.*got 8x32"):
        ssim(x[:8], x[:8], 1.0)
