"""A small CT-like test scan with a known blur and noise: a body of fat holding an organ with vessels.

The scene is drawn on a grid four times finer along each axis, blurred there by the scanner's point
spread and averaged over each voxel, so edges carry the partial volume of a real scan; then
correlated noise of a known sd and correlation length is added.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medgan.lesions.grid import gaussian_kernel, smooth

SPACING = (0.8, 0.8, 2.5)  # mm
SHAPE = (96, 88, 32)
FINE = (2, 2, 4)  # supersampling per axis
BLUR_MM = (0.7, 0.7, 1.2)  # the scanner's point spread, sd per axis
NOISE_SD = 12.0  # HU
NOISE_CORR_MM = (0.64, 0.64, 0.75)  # sd of the Gaussian that correlates the noise


def affine() -> np.ndarray:
    a = np.diag([*SPACING, 1.0])
    a[:3, 3] = [-40.0, -30.0, 10.0]
    return a


def _correlated(shape, corr_vox, generator) -> torch.Tensor:
    pads = [gaussian_kernel(c, "cpu").numel() // 2 for c in corr_vox]
    white = torch.randn([n + 2 * p for n, p in zip(shape, pads, strict=True)], generator=generator)
    field = smooth(white, corr_vox)[tuple(slice(p, p + n) for p, n in zip(pads, shape, strict=True))]
    gain = np.prod([float((gaussian_kernel(c, "cpu", torch.float64) ** 2).sum()) for c in corr_vox])
    return field / float(np.sqrt(gain))


def _voxels(fine: torch.Tensor) -> torch.Tensor:
    """Average each voxel's supersamples."""
    return fine.reshape(SHAPE[0], FINE[0], SHAPE[1], FINE[1], SHAPE[2], FINE[2]).mean((1, 3, 5))


def ct_phantom(seed: int = 0, noise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(int16 HU image [i, j, k], bool organ mask)."""
    g = torch.Generator().manual_seed(seed)
    fine_spacing = [s / f for s, f in zip(SPACING, FINE, strict=True)]
    axes = [(torch.arange(n * f, dtype=torch.float32) + 0.5) * s for n, f, s in zip(SHAPE, FINE, fine_spacing,
                                                                                     strict=True)]  # fmt: skip
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    cx, cy, cz = [n * s / 2 for n, s in zip(SHAPE, SPACING, strict=True)]
    scene = torch.full(x.shape, -1000.0)
    scene[((x - cx) / 34) ** 2 + ((y - cy) / 30) ** 2 <= 1] = -100.0
    organ_fine = ((x - cx) / 26) ** 2 + ((y - cy) / 22) ** 2 + ((z - cz) / 36) ** 2 <= 1
    scene[organ_fine] = 60.0
    vessel = (((x - cx - 10) ** 2 + (y - cy + 6) ** 2) <= 2.5**2) & organ_fine
    scene[vessel] = 160.0
    sigma_fine = [b / s for b, s in zip(BLUR_MM, fine_spacing, strict=True)]
    pads = [gaussian_kernel(s, "cpu").numel() // 2 for s in sigma_fine]
    padded = F.pad(scene[None, None], [p for p in reversed(pads) for _ in range(2)], mode="replicate")[0, 0]
    blurred = smooth(padded, sigma_fine)[tuple(slice(p, p + n) for p, n in zip(pads, scene.shape, strict=True))]
    image = _voxels(blurred)
    organ = _voxels(organ_fine.float()) > 0.5
    vessels = _voxels(vessel.float()) > 0
    if noise:
        corr_vox = [c / s for c, s in zip(NOISE_CORR_MM, SPACING, strict=True)]
        image = image + _correlated(SHAPE, corr_vox, g) * NOISE_SD
    return image.round().clamp(-1024, 3071).to(torch.int16), organ & ~vessels


def blob_phantom(spacing_mm, blur_mm, noise_sd, noise_corr_mm, shape=(48, 48, 24), fine=3, seed=0) -> torch.Tensor:
    """Random overlapping balls of random intensity (plenty of edges facing every axis), drawn `fine` times
    finer, blurred there by `blur_mm` (sd per axis), averaged over each voxel, plus correlated noise."""
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    fine_spacing = [s / fine for s in spacing_mm]
    axes = [(torch.arange(n * fine, dtype=torch.float32) + 0.5) * s for n, s in zip(shape, fine_spacing, strict=True)]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    extent = [n * s for n, s in zip(shape, spacing_mm, strict=True)]
    scene = torch.zeros(x.shape)
    for _ in range(14):
        c = rng.uniform(0, 1, 3) * extent
        r = rng.uniform(0.2, 0.4) * min(extent)
        scene[(x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= r * r] = float(rng.uniform(-400, 400))
    sigma_fine = [b / s for b, s in zip(blur_mm, fine_spacing, strict=True)]
    pads = [gaussian_kernel(s, "cpu").numel() // 2 for s in sigma_fine]
    padded = F.pad(scene[None, None], [p for p in reversed(pads) for _ in range(2)], mode="replicate")[0, 0]
    blurred = smooth(padded, sigma_fine)[tuple(slice(p, p + n) for p, n in zip(pads, scene.shape, strict=True))]
    image = blurred.reshape(shape[0], fine, shape[1], fine, shape[2], fine).mean((1, 3, 5))
    corr_vox = [c / s for c, s in zip(noise_corr_mm, spacing_mm, strict=True)]
    return image + _correlated(shape, corr_vox, g) * noise_sd
