"""Paired image metrics: PSNR, SSIM, MS-SSIM, MAE, RMSE and NRMSE, in 2D and 3D.

    from medgan.metrics.image import psnr, ssim, ms_ssim
    float(psnr(reference_hu, enhanced_hu, data_range=4095.0))       # dB
    float(ssim(reference_hu, enhanced_hu, data_range=4095.0, mask=body))

Every function takes the reference first and the image under test second, numpy arrays or
torch tensors shaped `[*spatial]` (2D or 3D), or `[..., *spatial]` with `spatial_dims` given
(leading axes are batch axes and come back in the result's shape). `data_range` is always
explicit: guessing it from the data is the classic medical-imaging bug (a CT window of 4095
HU and a [0, 1] image give very different PSNRs for the same error).

SSIM follows Wang et al. 2004 with the usual constants: an 11-tap Gaussian window of sigma 1.5
voxels, K1 = 0.01, K2 = 0.03, population (not sample) covariances, and the mean of the SSIM map
over the region where the window fits entirely inside the image (scikit-image's
`structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`).
MS-SSIM follows Wang, Simoncelli and Bovik 2003: five scales with the published weights, 2x
average-pool downsampling between scales (the last row is repeated on odd sizes, as in the
reference MATLAB code), contrast-structure terms at every scale and luminance at the coarsest.
Negative contrast-structure means are clamped to zero before the fractional powers (as in
TensorFlow and pytorch-msssim), so anti-correlated images score 0 rather than NaN.

Computation keeps float32 and float64 inputs' precision; anything else (integers, half
precision) is computed in float64 on the CPU and float32 on CUDA. Pass float64 for reference-
grade numbers on HU-scale data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medgan.errors import ConfigError, InputError
from medgan.registry import Registry

__all__ = [
    "MS_SSIM_WEIGHTS",
    "PAIRED_METRICS",
    "mae",
    "max_ms_ssim_scales",
    "ms_ssim",
    "ms_ssim_weights",
    "nrmse",
    "psnr",
    "rmse",
    "ssim",
]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest scale first
SSIM_SIGMA_VOXELS = 1.5
SSIM_WIN_SIZE = 11  # 2 * int(3.5 * 1.5 + 0.5) + 1: scikit-image's Gaussian window for sigma 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03

PAIRED_METRICS: Registry = Registry("paired metric")

ArrayLike = np.ndarray | torch.Tensor


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    t = x.as_tensor() if hasattr(x, "as_tensor") else x  # MetaTensor -> plain tensor
    t = torch.as_tensor(np.asarray(t)) if not isinstance(t, torch.Tensor) else t.detach()
    if t.dtype in (torch.float32, torch.float64):
        return t
    return t.to(torch.float32 if t.device.type == "cuda" else torch.float64)


def _prepare(reference: ArrayLike, test: ArrayLike, mask: ArrayLike | None, spatial_dims: int | None):
    """Tensors shaped [B, 1, *spatial] (batch axes folded), the mask alike, the batch shape, spatial_dims."""
    x, y = _as_tensor(reference), _as_tensor(test)
    if x.shape != y.shape:
        raise InputError(f"the images differ in shape: {_shape(x.shape)} vs {_shape(y.shape)}")
    if spatial_dims is None:
        if x.ndim not in (2, 3):
            raise ConfigError(f"images of shape {_shape(x.shape)}: pass spatial_dims (2 or 3) for batched input")
        spatial_dims = x.ndim
    if spatial_dims not in (2, 3) or x.ndim < spatial_dims:
        raise ConfigError(f"spatial_dims must be 2 or 3 and at most the number of axes; got {spatial_dims}")
    batch_shape = tuple(x.shape[: x.ndim - spatial_dims])
    spatial = tuple(x.shape[x.ndim - spatial_dims :])
    m = None
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask, device=x.device)
        try:
            m = torch.broadcast_to(m.to(torch.bool), x.shape)
        except RuntimeError:
            raise InputError(f"the mask's shape {_shape(m.shape)} does not fit the images' {_shape(x.shape)}") from None
        if not m.any():
            raise InputError("the mask is empty")
        m = m.reshape(-1, 1, *spatial).to(x.dtype)
    return x.reshape(-1, 1, *spatial), y.reshape(-1, 1, *spatial), m, batch_shape, spatial_dims


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(n)) for n in shape)


def _check_range(data_range: float) -> float:
    if data_range is None or not math.isfinite(float(data_range)) or float(data_range) <= 0:
        raise ConfigError(f"data_range must be a positive number (e.g. 4095 for HU in [-1024, 3071]); got {data_range}")
    return float(data_range)


def _masked_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean over all but the batch axis, weighted by `weights` (a mask) when given."""
    flat = values.flatten(1)
    if weights is None:
        return flat.mean(dim=1)
    w = weights.flatten(1)
    return (flat * w).sum(dim=1) / w.sum(dim=1)  # a batch item with an empty mask becomes NaN, on purpose


def _reshape(values: torch.Tensor, batch_shape: tuple[int, ...]) -> torch.Tensor:
    return values.reshape(batch_shape)


@PAIRED_METRICS.register("mae")
def mae(reference: ArrayLike, test: ArrayLike, mask: ArrayLike | None = None, spatial_dims: int | None = None):
    """Mean absolute error, in the images' units (HU for CT)."""
    x, y, m, batch, _ = _prepare(reference, test, mask, spatial_dims)
    return _reshape(_masked_mean((x - y).abs(), m), batch)


def _mse(reference, test, mask, spatial_dims):
    x, y, m, batch, _ = _prepare(reference, test, mask, spatial_dims)
    return _reshape(_masked_mean((x - y) ** 2, m), batch)


@PAIRED_METRICS.register("rmse")
def rmse(reference: ArrayLike, test: ArrayLike, mask: ArrayLike | None = None, spatial_dims: int | None = None):
    """Root-mean-square error, in the images' units (HU for CT)."""
    return _mse(reference, test, mask, spatial_dims).sqrt()


@PAIRED_METRICS.register("nrmse")
def nrmse(
    reference: ArrayLike,
    test: ArrayLike,
    data_range: float,  # width of the intensity range the images live in, in their units
    mask: ArrayLike | None = None,
    spatial_dims: int | None = None,
):
    """RMSE divided by `data_range` (scikit-image's `normalized_root_mse(normalization="min-max")`
    when data_range is the reference's max - min)."""
    return rmse(reference, test, mask, spatial_dims) / _check_range(data_range)


@PAIRED_METRICS.register("psnr")
def psnr(
    reference: ArrayLike,
    test: ArrayLike,
    data_range: float,  # width of the intensity range, in the images' units (e.g. 4095 HU, or 1.0)
    mask: ArrayLike | None = None,
    spatial_dims: int | None = None,
):
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / MSE); +inf for identical images."""
    data_range = _check_range(data_range)
    return 10.0 * torch.log10(data_range**2 / _mse(reference, test, mask, spatial_dims))


def _gaussian_taps(sigma: float, win_size: int, dtype, device) -> torch.Tensor:
    radius = win_size // 2
    offsets = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


def _blur_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, keeping only positions where the window lies inside the image."""
    spatial_dims = x.ndim - 2
    conv = F.conv2d if spatial_dims == 2 else F.conv3d
    for axis in range(spatial_dims):
        shape = [1, 1] + [1] * spatial_dims
        shape[2 + axis] = taps.numel()
        x = conv(x, taps.reshape(shape))
    return x


def _ssim_maps(x, y, data_range, taps):
    """Luminance and contrast-structure maps over the valid region (Wang et al. 2004, eq. 6-13)."""
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    # Variances are shift-invariant: shifting both images by one constant keeps E[x^2] - E[x]^2
    # well conditioned for HU-scale data (|x| ~ 1000) in float32 on CUDA.
    shift = x.mean()
    xs, ys = x - shift, y - shift
    mu_x, mu_y = _blur_valid(xs, taps), _blur_valid(ys, taps)
    var_x = _blur_valid(xs * xs, taps) - mu_x**2
    var_y = _blur_valid(ys * ys, taps) - mu_y**2
    cov_xy = _blur_valid(xs * ys, taps) - mu_x * mu_y
    mu_x, mu_y = mu_x + shift, mu_y + shift
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
    return luminance, contrast_structure


def _valid_weights(mask: torch.Tensor | None, win_size: int) -> torch.Tensor | None:
    if mask is None:
        return None
    crop = win_size // 2
    return mask[(..., *[slice(crop, n - crop) for n in mask.shape[2:]])]


def _check_window(spatial: Sequence[int], win_size: int, what: str, hint: str = "") -> None:
    if min(spatial) < win_size:
        raise InputError(
            f"{what} needs at least {win_size} voxels along every axis (its {win_size}-voxel Gaussian window); "
            f"got {_shape(spatial)}{hint}"
        )


@PAIRED_METRICS.register("ssim")
def ssim(
    reference: ArrayLike,
    test: ArrayLike,
    data_range: float,  # width of the intensity range, in the images' units
    mask: ArrayLike | None = None,  # average the SSIM map over these voxels only
    spatial_dims: int | None = None,
    sigma: float = SSIM_SIGMA_VOXELS,  # Gaussian window's standard deviation, voxels
    win_size: int = SSIM_WIN_SIZE,  # window width, voxels (odd)
):
    """Structural similarity (mean of the SSIM map over the valid region, or the mask within it)."""
    data_range = _check_range(data_range)
    x, y, m, batch, _ = _prepare(reference, test, mask, spatial_dims)
    _check_window(x.shape[2:], win_size, "SSIM")
    taps = _gaussian_taps(sigma, win_size, x.dtype, x.device)
    luminance, contrast_structure = _ssim_maps(x, y, data_range, taps)
    return _reshape(_masked_mean(luminance * contrast_structure, _valid_weights(m, win_size)), batch)


def ms_ssim_weights(scales: int = 5) -> tuple[float, ...]:
    """The first `scales` weights of Wang et al. 2003, rescaled to sum to 1 (all five as published)."""
    if not 1 <= scales <= len(MS_SSIM_WEIGHTS):
        raise ConfigError(f"MS-SSIM has 1 to {len(MS_SSIM_WEIGHTS)} scales; got {scales}")
    if scales == len(MS_SSIM_WEIGHTS):
        return MS_SSIM_WEIGHTS
    kept = MS_SSIM_WEIGHTS[:scales]
    return tuple(w / sum(kept) for w in kept)


def max_ms_ssim_scales(shape: Sequence[int], win_size: int = SSIM_WIN_SIZE) -> int:
    """How many MS-SSIM scales (at most 5) fit an image of spatial `shape` (0 if not even one)."""
    scales, side = 0, min(int(n) for n in shape)
    while scales < len(MS_SSIM_WEIGHTS) and side >= win_size:
        scales += 1
        side = (side + 1) // 2
    return scales


def _halve(x: torch.Tensor) -> torch.Tensor:
    """2x average pooling; an odd axis repeats its last row first (MATLAB's 'symmetric' imfilter)."""
    pad = []
    for n in reversed(x.shape[2:]):
        pad += [0, n % 2]
    if any(pad):
        x = F.pad(x, pad, mode="replicate")
    pool = F.avg_pool2d if x.ndim == 4 else F.avg_pool3d
    return pool(x, kernel_size=2)


@PAIRED_METRICS.register("ms_ssim")
def ms_ssim(
    reference: ArrayLike,
    test: ArrayLike,
    data_range: float,  # width of the intensity range, in the images' units
    mask: ArrayLike | None = None,  # weights of the scale-1 maps; average-pooled with the images
    spatial_dims: int | None = None,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,  # one per scale, finest first; see ms_ssim_weights()
    sigma: float = SSIM_SIGMA_VOXELS,
    win_size: int = SSIM_WIN_SIZE,
):
    """Multi-scale SSIM: prod_j cs_j^w_j over scales 1..M-1, times (l_M cs_M)^w_M at the coarsest.

    Five scales need at least 161 voxels along every axis; smaller images (a 128 x 128 x 48 CT)
    take fewer, e.g. `weights=ms_ssim_weights(max_ms_ssim_scales(shape))`.
    """
    data_range = _check_range(data_range)
    x, y, m, batch, _ = _prepare(reference, test, mask, spatial_dims)
    scales = len(weights)
    if scales < 1:
        raise ConfigError("MS-SSIM needs at least one weight")
    needed = (win_size - 1) * 2 ** (scales - 1) + 1
    if max_ms_ssim_scales(x.shape[2:], win_size) < scales:
        raise InputError(
            f"MS-SSIM with {scales} scales needs at least {needed} voxels along every axis; got {_shape(x.shape[2:])} "
            f"(use fewer scales: weights=ms_ssim_weights({max(max_ms_ssim_scales(x.shape[2:], win_size), 1)}))"
        )
    taps = _gaussian_taps(sigma, win_size, x.dtype, x.device)
    w = torch.as_tensor(list(weights), dtype=x.dtype, device=x.device)
    result = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    for scale in range(scales):
        luminance, contrast_structure = _ssim_maps(x, y, data_range, taps)
        valid = _valid_weights(m, win_size)
        if scale == scales - 1:
            term = _masked_mean(luminance * contrast_structure, valid)
        else:
            term = _masked_mean(contrast_structure, valid)
            x, y = _halve(x), _halve(y)
            m = None if m is None else _halve(m)
        result = result * term.clamp(min=0) ** w[scale]
    return _reshape(result, batch)
