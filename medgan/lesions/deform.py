"""Mass effect: a smooth radial displacement that pushes the tissue around a lesion outward.

A lesion of equivalent radius R that pushes aside the fraction `strength` of its volume moves the
tissue at distance r from its centre to r' with r'^3 = r^3 + strength R^3 (volume is conserved
outside the lesion). The displacement fades to zero between R and `reach_mm` with a raised cosine,
so the scan beyond the reach is untouched. The image is resampled linearly and label maps by
nearest label, through the same field, so they stay in register.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["push_sources", "warp"]


def push_sources(offsets_mm: Tensor, inverse_linear: Tensor, strength: float, radius_mm: float,
                 reach_mm: float) -> tuple[Tensor, Tensor]:  # fmt: skip
    """For voxels at world `offsets_mm` [..., 3] from the lesion's centre: where their content comes from, as a
    voxel-index shift [..., 3] from themselves, and whether they move at all."""
    rho = torch.linalg.vector_norm(offsets_mm, dim=-1)
    pushed = (rho**3 - strength * radius_mm**3).clamp(min=0.0) ** (1 / 3)
    t = ((rho - radius_mm) / max(reach_mm - radius_mm, 1e-6)).clamp(0.0, 1.0)
    fade = 0.5 * (1 + torch.cos(math.pi * t))
    shift_mm = -offsets_mm * (fade * (rho - pushed) / rho.clamp(min=1e-9))[..., None]
    moved = (fade * (rho - pushed)) > 0
    return shift_mm @ inverse_linear.T, moved


def warp(volume: Tensor, shift_vox: Tensor, moved: Tensor, labels: bool = False) -> Tensor:
    """`volume` (3D) resampled at each voxel's index plus `shift_vox`; unmoved voxels keep their values."""
    if not bool(moved.any()):
        return volume
    shape = volume.shape
    axes = [torch.arange(n, device=volume.device, dtype=torch.float32) for n in shape]
    index = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1) + shift_vox
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in shape], device=volume.device)
    grid = (index * scale - 1.0).flip(-1)[None]  # grid_sample wants (x, y, z) = axes 2, 1, 0
    source = volume[None, None].to(torch.float32)
    sampled = F.grid_sample(source, grid, mode="nearest" if labels else "bilinear", padding_mode="border",
                            align_corners=True)[0, 0]  # fmt: skip
    if labels or not volume.is_floating_point():
        sampled = sampled.round()
    return torch.where(moved, sampled.to(volume.dtype), volume)
