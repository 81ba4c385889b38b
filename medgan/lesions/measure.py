"""What the lesion model measures in a scan, and how a lesion is measured once it is in.

Noise (`estimate_noise`): in a region of the organ, second differences along each axis at lags 1
and 2, `d_L(x) = I(x + L) - 2 I(x) + I(x - L)`, cancel the smooth anatomy (any linear trend) and
leave the noise. For stationary noise of standard deviation s whose autocorrelation is Gaussian,
rho(d) = exp(-d^2 / (4 c^2)) (white noise smoothed by a Gaussian of standard deviation c), their
variances are s^2 (6 - 8 rho(L) + 2 rho(2L)). The ratio of the lag-2 to the lag-1 variance depends
on the correlation alone (1 for white noise, rising to 16), so it gives c; then the lag-1 variance
gives s. Variances are robust: (1.4826 MAD)^2, so the few differences that cross edges do not count.

Scanner blur (`estimate_blur`): along each axis, profiles across strong edges that face that axis
(the gradient points along it) are fitted with an error function, its width found by a grid search
over width and sub-voxel position. A voxel's value is the scene blurred by the scanner's point
spread function and averaged over the voxel, so the fitted width is sqrt(s_psf^2 + h^2 / 12) for
voxel size h. Anatomy that is no clean step (a surface cutting a thick slice obliquely, two edges
close together) fits badly and reads wider, so the better-fitting quarter of the edges is kept and
their median width gives s_psf per axis. Along a thick-slice axis (twice as coarse as the finest or
more) few edges face the axis and none is a clean step, while the slice profile itself is the
voxel's partial volume, which lesions get anyway: its estimate is capped at the largest in-plane
one. What remains errs on the blurry side: inserted lesions come out no sharper than the anatomy
around them.

Lesions (`measure_lesion`): volume and equivalent diameter from the label mask, the longest
diameter between voxel centres, and the mean contrast of the lesion to a shell of organ voxels
around it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from medgan.lesions.grid import border, distance_mm

__all__ = ["BlurEstimate", "NoiseEstimate", "estimate_blur", "estimate_noise", "lesion_contrast", "measure_lesion"]

_MAD_TO_SD = 1.482602218505602  # 1 / Phi^-1(3/4): MAD of a normal variable times this is its sd
_MIN_DIFFERENCES = 64  # fewer usable differences along an axis than this: that axis gives no estimate
_DEFAULT_BLUR_VOX = 0.5  # scanner blur assumed (sd, voxels) where no usable edge is found
GOOD_FRACTION = 0.25  # the better-fitting fraction of edges the blur is measured on
THICK_RATIO = 2.0  # an axis this many times coarser than the finest is a thick-slice axis


@dataclass(frozen=True)
class NoiseEstimate:
    sd: float  # noise standard deviation, image units
    corr_mm: tuple[float, float, float]  # Gaussian correlation length c per axis (0 = white), mm
    samples: int  # second differences used


@dataclass(frozen=True)
class BlurEstimate:
    sigma_mm: tuple[float, float, float]  # Gaussian point-spread sd per axis, mm
    edges: tuple[int, int, int]  # edges fitted per axis (0: the default was used)


def _robust_var(values: Tensor) -> float:
    median = values.median()
    return float((_MAD_TO_SD * (values - median).abs().median()) ** 2)


def _ratio_to_q(ratio: float) -> float:
    """Lag-1 correlation q = exp(-h^2 / (4 c^2)) from the lag-2/lag-1 second-difference variance ratio."""

    def model(q: float) -> float:
        return (6 - 8 * q**4 + 2 * q**16) / max(6 - 8 * q + 2 * q**4, 1e-300)

    if ratio <= 1.0:
        return 0.0
    lo, hi = 0.0, 0.999
    if ratio >= model(hi):
        return hi
    for _ in range(60):  # model rises monotonically from 1 at q = 0
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if model(mid) < ratio else (lo, mid)
    return 0.5 * (lo + hi)


def estimate_noise(image: Tensor, region: Tensor, spacing_mm: Sequence[float]) -> NoiseEstimate | None:
    """Noise sd and correlation length in `region` (a 3D bool tensor) of `image` (3D); None if too small."""
    image = image.float()
    sds, corrs, used = [], [], 0
    for axis, h in enumerate(spacing_mm):
        variances = []
        for lag in (1, 2):
            n = image.shape[axis]
            if n <= 2 * lag:
                break
            a, b, c = (image.narrow(axis, s, n - 2 * lag) for s in (0, lag, 2 * lag))
            ok = region.narrow(axis, 0, n - 2 * lag) & region.narrow(axis, lag, n - 2 * lag)
            ok &= region.narrow(axis, 2 * lag, n - 2 * lag)
            diffs = (a - 2 * b + c)[ok]
            if diffs.numel() < _MIN_DIFFERENCES:
                break
            variances.append(_robust_var(diffs))
            used += diffs.numel() if lag == 1 else 0
        if len(variances) < 2 or variances[0] <= 0:
            corrs.append(None)
            continue
        q = _ratio_to_q(variances[1] / variances[0])
        sds.append(math.sqrt(variances[0] / (6 - 8 * q + 2 * q**4)))
        corrs.append(0.0 if q <= 0 else float(h) / math.sqrt(-4.0 * math.log(q)))
    if not sds:
        return None
    known = [c for c in corrs if c is not None]
    fill = float(np.median(known))
    return NoiseEstimate(float(np.median(sds)), tuple(fill if c is None else c for c in corrs), used)


def _edge_table(widths: Tensor, shifts: Tensor, half: int) -> Tensor:
    """Model edge profiles Phi((k - x0) / w) for every (width, shift): [W, S, 2 half + 1]."""
    k = torch.arange(-half, half + 1, dtype=torch.float64, device=widths.device)
    z = (k[None, None] - shifts[None, :, None]) / widths[:, None, None]
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def estimate_blur(
    image: Tensor,
    spacing_mm: Sequence[float],
    region: Tensor | None = None,  # where edges may be taken (3D bool); None: anywhere
    max_edges: int = 400,  # strongest edges fitted per axis
    min_step: float = 0.0,  # smallest intensity step counted as an edge (image units), e.g. 10 x noise sd
) -> BlurEstimate:
    """Gaussian point-spread sd per axis from edge profiles (see the module docstring)."""
    image = image.float()
    grads = []
    for axis, h in enumerate(spacing_mm):
        g = torch.zeros_like(image)
        n = image.shape[axis]
        if n >= 3:
            g.narrow(axis, 1, n - 2).copy_((image.narrow(axis, 2, n - 2) - image.narrow(axis, 0, n - 2)) / (2 * h))
        grads.append(g)
    magnitude = torch.sqrt(sum(g * g for g in grads))
    sigmas, counts = [], []
    widths = torch.linspace(0.05, 3.0, 60, dtype=torch.float64, device=image.device)
    shifts = torch.linspace(-0.5, 0.5, 21, dtype=torch.float64, device=image.device)
    for axis, h in enumerate(spacing_mm):
        half = max(4, min(8, math.ceil(5.0 / h)))
        sigma_vox = _axis_blur(image, grads[axis], magnitude, axis, half, region, max_edges, min_step, widths, shifts)
        counts.append(0 if sigma_vox is None else int(sigma_vox[1]))
        sigmas.append((_DEFAULT_BLUR_VOX if sigma_vox is None else sigma_vox[0]) * float(h))
    finest = min(spacing_mm)
    thin = [s for s, h in zip(sigmas, spacing_mm, strict=True) if h < THICK_RATIO * finest]
    sigmas = [min(s, max(thin)) if h >= THICK_RATIO * finest else s for s, h in zip(sigmas, spacing_mm, strict=True)]
    return BlurEstimate(tuple(sigmas), tuple(counts))


def _axis_blur(image, g, magnitude, axis, half, region, max_edges, min_step, widths, shifts):
    n = image.shape[axis]
    if n < 2 * half + 3:
        return None
    strength = g.abs()
    facing = strength >= 0.9 * magnitude  # the edge's normal runs along this axis (within 25 degrees)
    peak = torch.zeros_like(facing)
    core = strength.narrow(axis, 1, n - 2)
    local_max = (core >= strength.narrow(axis, 0, n - 2)) & (core > strength.narrow(axis, 2, n - 2))
    peak.narrow(axis, 1, n - 2).copy_(local_max)
    ok = facing & peak & (strength > 0)
    inside = torch.zeros_like(ok)
    inside.narrow(axis, half, n - 2 * half).fill_(True)
    ok &= inside
    if region is not None:
        ok &= region
    values = strength[ok]
    if values.numel() < 8:
        return None
    top = torch.topk(values, min(max_edges * 4, values.numel())).indices
    where = ok.nonzero()[top]  # candidates, strongest first
    offsets = torch.arange(-half, half + 1, device=image.device)
    index = where[:, None, :].repeat(1, offsets.numel(), 1)
    index[..., axis] += offsets
    profiles = image[index[..., 0], index[..., 1], index[..., 2]].double()
    lo, hi = profiles[:, :2].mean(1), profiles[:, -2:].mean(1)
    step = hi - lo
    flat = ((profiles[:, 0] - profiles[:, 1]).abs() < 0.15 * step.abs()) & (
        (profiles[:, -1] - profiles[:, -2]).abs() < 0.15 * step.abs()
    )
    normal = (profiles - lo[:, None]) / torch.where(step.abs() > 0, step, 1.0)[:, None]
    tidy = flat & (step.abs() > max(min_step, 1e-6)) & (normal.amin(1) > -0.25) & (normal.amax(1) < 1.25)
    normal = normal[tidy][:max_edges]
    if normal.shape[0] < 8:
        return None
    table = _edge_table(widths, shifts, half).reshape(-1, 2 * half + 1)  # [W*S, K]
    error = torch.cdist(normal, table)  # [E, W*S]
    residual, best = error.min(1)
    total = widths[best // shifts.numel()]
    # Edges that are not clean steps (a surface cutting a thick slice obliquely, two edges close together)
    # fit an error function badly and read wider: keep the better-fitting half.
    good = residual <= torch.quantile(residual, GOOD_FRACTION)
    psf = torch.sqrt(torch.clamp(total[good] ** 2 - 1.0 / 12.0, min=0.0))
    return float(psf.median()), int(normal.shape[0])


def lesion_contrast(
    image: Tensor, mask: Tensor, organ: Tensor, spacing_mm: Sequence[float], shell_mm: Sequence[float]
) -> tuple[float, float]:
    """(mean inside `mask`, mean of the organ voxels whose distance from the mask is in (shell_mm[0], shell_mm[1]])."""
    distance = distance_mm(mask, spacing_mm, shell_mm[1])
    shell = (distance > shell_mm[0]) & (distance <= shell_mm[1]) & organ
    inside = image[mask].double().mean()
    around = image[shell].double().mean() if bool(shell.any()) else torch.tensor(float("nan"))
    return float(inside), float(around)


def measure_lesion(mask: Tensor, linear: np.ndarray) -> dict:
    """Voxels, volume (mL), equivalent diameter (mm) and longest diameter (mm, between voxel centres) of a
    3D bool mask; `linear` is the affine's 3x3 part."""
    voxel_ml = abs(float(np.linalg.det(np.asarray(linear, float)))) / 1000.0
    count = int(mask.sum())
    volume_ml = count * voxel_ml
    return {
        "voxels": count,
        "volume_ml": volume_ml,
        "equivalent_diameter_mm": (6.0 * volume_ml * 1000.0 / math.pi) ** (1 / 3),
        "longest_diameter_mm": _longest(mask, linear),
    }


def _longest(mask: Tensor, linear: np.ndarray) -> float:
    """The largest distance between two border voxels: the largest over candidate pairs, where the candidates
    are the outermost border voxels along 1024 directions (the diameter's ends are outermost along it, so at
    most D (1 - cos 0.06 rad), under 0.2%, is lost)."""
    if int(mask.sum()) < 2:
        return 0.0
    edge = border(mask).nonzero().double()
    points = edge @ torch.as_tensor(np.asarray(linear, float).T, device=edge.device)
    if points.shape[0] > 2048:
        k = torch.arange(1024, dtype=torch.float64, device=points.device) + 0.5
        z = 1 - 2 * k / 1024
        phi = math.pi * (1 + math.sqrt(5)) * k
        directions = torch.stack([torch.sqrt(1 - z * z) * torch.cos(phi), torch.sqrt(1 - z * z) * torch.sin(phi), z], 1)
        projections = points @ directions.T
        ends = torch.cat([projections.argmax(0), projections.argmin(0)]).unique()
        points = points[ends]
    return float(torch.cdist(points, points).max())
