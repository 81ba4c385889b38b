"""Lesion content: what fills the shape. The procedural renderer, and the interface a learned one meets.

A content renderer gets a `LesionCrop` (the image around the lesion, the organ there, the rendered
shape, the voxel size) and the lesion's record, and returns the crop with the lesion in it. The
shape and its placement come from the procedural model whatever fills it, so a learned renderer
(an inpainting network) is one more `ContentRenderer`, registered in `CONTENT_RENDERERS`.

The procedural renderer (`ProceduralRenderer`) blends lesion tissue into the scan:

    out = I + m (b + n - I) + s (A m + G[rim, core, calcification contrasts]) + s h (1 - m) G[halo]

I is the scan, b the mean of the surroundings (organ voxels in a shell around the lesion), m the
lesion's partial volume blurred by the scanner's point spread and the border's own softness (G),
n noise with the scan's own sd and correlation length plus the lesion's heterogeneity, s the unit
(1 for HU or absolute contrasts, b for relative ones). The tissue contrast A is solved for so that
the mean over the label mask minus b is exactly the requested contrast: the control a reader (or
a segmentation-based measurement) sees, whatever the lesion's size relative to the voxels. Voxels
the lesion does not reach are left bit for bit as they were.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from medgan.errors import InputError
from medgan.lesions.grid import distance_mm, gaussian_kernel, smooth
from medgan.lesions.record import LesionRecord
from medgan.lesions.shapes import LesionShape
from medgan.registry import Registry

__all__ = ["CONTENT_RENDERERS", "ContentRenderer", "LesionCrop", "ProceduralRenderer", "blur_sd_mm",
           "correlated_noise", "surround_shell_mm"]  # fmt: skip

SHELL_WIDTH_MM = 3.0  # the surroundings: a shell this thick (at least one voxel) beyond the lesion's reach


@dataclass
class LesionCrop:
    """The image around one lesion and everything on the same voxels (all 3D, the box's shape)."""

    image: Tensor  # float32, physical units
    organ: Tensor  # bool
    inside: Tensor  # bool: voxels of the box that lie inside the image
    shape: LesionShape
    spacing_mm: tuple[float, float, float]


class ContentRenderer(Protocol):
    """Fills a placed lesion shape with intensities."""

    name: str

    def render(self, crop: LesionCrop, record: LesionRecord) -> tuple[Tensor, dict]:
        """The crop's image with the lesion in it, and what was rendered (for the record's `rendered`)."""
        ...


CONTENT_RENDERERS: Registry = Registry("lesion content renderer")


def correlated_noise(shape: Sequence[int], corr_vox: Sequence[float], generator: torch.Generator,
                     device) -> Tensor:  # fmt: skip
    """Stationary unit-variance Gaussian noise whose autocorrelation is Gaussian: white noise smoothed by a
    Gaussian of sd `corr_vox` per axis, drawn with a margin so the edges are as noisy as the middle."""
    pads = [gaussian_kernel(float(c), device).numel() // 2 for c in corr_vox]
    big = [n + 2 * p for n, p in zip(shape, pads, strict=True)]
    white = torch.randn(big, generator=generator, device=device, dtype=torch.float32)
    field = smooth(white, corr_vox)
    gain = math.prod(float((gaussian_kernel(float(c), device, torch.float64) ** 2).sum()) for c in corr_vox)
    field = field[tuple(slice(p, p + n) for p, n in zip(pads, shape, strict=True))]
    return field / math.sqrt(gain)


def blur_sd_mm(record: LesionRecord) -> list[float]:
    """The lesion border's total Gaussian sd per axis (mm): the scanner's blur and the border's own softness."""
    return [math.hypot(s, record.intensity.border_mm) for s in record.scan.blur_sigma_mm]


def surround_shell_mm(record: LesionRecord, spacing_mm: Sequence[float]) -> tuple[float, float]:
    """(inner, outer) distance from the label mask, in mm, of the shell the surroundings are measured in:
    beyond the halo and three blur sds, so the lesion has left it untouched."""
    inner = record.compartments.halo_mm + 3.0 * max(blur_sd_mm(record)) + max(spacing_mm)
    return inner, inner + max(SHELL_WIDTH_MM, max(spacing_mm))


def _reach(lesion: Tensor, halo: Tensor, sigma_vox: Sequence[float]) -> tuple[slice, slice, slice]:
    """The part of the box that the lesion or its halo, spread by the blur kernel, can change."""
    where = (lesion | halo).nonzero()
    if len(where) == 0:
        return tuple(slice(0, n) for n in lesion.shape)
    radius = [gaussian_kernel(float(s), "cpu").numel() // 2 for s in sigma_vox]
    lo, hi = where.amin(0).tolist(), where.amax(0).tolist()
    return tuple(slice(max(0, a - r), min(n, b + r + 1)) for a, b, r, n in zip(lo, hi, radius, lesion.shape,
                                                                                strict=True))  # fmt: skip


@CONTENT_RENDERERS.register("procedural")
class ProceduralRenderer:
    """Correlated-noise texture, rim, core, calcifications and halo, blended at the scan's own sharpness."""

    name = "procedural"

    def render(self, crop: LesionCrop, record: LesionRecord) -> tuple[Tensor, dict]:
        spacing = crop.spacing_mm
        shape, image, device = crop.shape, crop.image, crop.image.device
        sigma_vox = [s / h for s, h in zip(blur_sd_mm(record), spacing, strict=True)]
        inner, outer = surround_shell_mm(record, spacing)
        mask = shape.mask & crop.inside
        distance = distance_mm(mask, spacing, outer)
        shell = (distance > inner) & (distance <= outer) & crop.organ & crop.inside
        if not bool(shell.any()):
            raise InputError(f"lesion {record.index}: no organ voxels around it to measure its contrast "
                             f"against ({inner:.1f} to {outer:.1f} mm from it); the organ is thin here")  # fmt: skip
        background = float(image[shell].double().mean())
        look = record.intensity
        scale = 1.0
        if look.units == "relative":
            if background <= 0:
                raise InputError(f"lesion {record.index}: a relative contrast needs surroundings brighter than 0, "
                                 f"but they average {background:.4g}; give an absolute contrast")  # fmt: skip
            scale = background
        # Everything below happens where the blurred lesion and halo can reach: a part of the box.
        part = _reach(shape.occupancy > 0, shape.halo > 0, sigma_vox)
        occupancy, image_part, mask_part = shape.occupancy[part], image[part], mask[part]
        m = smooth(occupancy, sigma_vox)
        parts = shape.rim[part] * look.rim_contrast + shape.core[part] * look.core_contrast
        parts = parts + shape.calcification[part] * look.calcification_contrast
        generator = torch.Generator(device=device).manual_seed(int(record.lesion_seed))
        noise = correlated_noise(m.shape, [c / h for c, h in zip(record.scan.noise_corr_mm, spacing, strict=True)],
                                 generator, device) * record.scan.noise_sd  # fmt: skip
        if look.texture_sd > 0:
            corr = [look.texture_corr_mm / h for h in spacing]
            noise = noise + correlated_noise(m.shape, corr, generator, device) * (look.texture_sd * scale)
        spread = smooth(parts, sigma_vox) if bool(parts.any()) else torch.zeros_like(m)
        base = image_part + m * (background + noise - image_part) + scale * spread
        reached = (m != 0) | (spread != 0)
        if look.halo_contrast != 0 and record.compartments.halo_mm > 0:
            halo = smooth(shape.halo[part], sigma_vox)
            base = base + (scale * look.halo_contrast) * (1 - m) * halo
            reached |= halo != 0
        weight = float(m[mask_part].double().mean())
        target = look.contrast * scale
        tissue = (target + background - float(base[mask_part].double().mean())) / (scale * weight)
        out = image.clone()
        out[part] = torch.where(reached, base + (scale * tissue) * m, image_part)  # untouched voxels keep their bits
        info = {"tissue_contrast": tissue, "surroundings_mean": background, "shell_mm": [inner, outer],
                "partial_volume_mean": weight}  # fmt: skip
        return out, info
