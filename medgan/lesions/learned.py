"""Learned lesion content: an `inpaint` checkpoint paints the lesion inside the procedural shape.

The procedural model still decides where the lesion is, its shape, size and partial volume on the
scan's grid; the network, trained on real lesions and their masks (`task: inpaint`, `data.crop:
mask`), decides what it looks like inside. The crop around the lesion is resampled to the voxel size
the network was trained at, windowed as in training, filled by the generator (a 2D network slice by
slice), resampled back and blended into the scan with the same partial-volume weight as procedural
content, so the border is no sharper than the scan's own. The painted tissue is shifted so that the
lesion's mean contrast to its surroundings is the requested one (`match_contrast`), keeping the
network's texture and the caller's control. Voxels the lesion does not reach keep their bits. The
record's `rendered` names the checkpoint, its SHA-256 and training step.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medgan.data.transforms import resample, target_spacing
from medgan.errors import ConfigError, InputError
from medgan.lesions.grid import distance_mm, smooth
from medgan.lesions.record import LesionRecord
from medgan.lesions.textures import CONTENT_RENDERERS, LesionCrop, blur_sd_mm, surround_shell_mm

__all__ = ["LearnedRenderer"]


@CONTENT_RENDERERS.register("learned")
class LearnedRenderer:
    """Lesion content from an inpainting network (`medgan train` with `task: inpaint`)."""

    name = "learned"

    def __init__(
        self,
        checkpoint: str,  # an inpaint checkpoint (its EMA generator is used)
        device: str | torch.device = "cpu",
        match_contrast: bool = True,  # shift the painted tissue so the mean contrast is the requested one
        batch_size: int = 8,  # windows (or slices) per network call
    ) -> None:
        from medgan.inference.load import load_generators

        with open(checkpoint, "rb") as fh:
            self.sha256 = hashlib.sha256(fh.read()).hexdigest()
        self.model = load_generators(checkpoint, device)
        if self.model.task.name != "inpaint":
            raise ConfigError(f"is a checkpoint of task {self.model.task.name!r}; learned lesion content needs an "
                              "inpaint checkpoint", path=checkpoint)  # fmt: skip
        if self.model.record["image_channels"] != 1 or self.model.record["channels"] != 1:
            raise ConfigError("learned lesion content needs an inpaint checkpoint trained on single-channel slices "
                              "or volumes (no slabs)", path=checkpoint)  # fmt: skip
        self.checkpoint, self.device = checkpoint, torch.device(device)
        self.match_contrast, self.batch_size = match_contrast, batch_size
        self.step = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"])
        # The anatomy the network reads around a lesion: half its training field of view, so a crop fills a window.
        sizes = zip(self.model.cfg.data.image_size, self.model.record["spacing_mm"], strict=True)
        self.context_mm = max(n * h for n, h in sizes) / 2

    def _paint(self, image: Tensor, mask: Tensor, spacing: tuple[float, float, float]) -> Tensor:
        """The network's filled crop (physical units) on the crop's own grid."""
        from medgan.inference.synthesize import translate

        data = self.model.cfg.data
        target = target_spacing(list(spacing), data.spacing_mm, data.spatial_dims, data.slice_axis)
        x = resample(image[None].float().cpu(), spacing, target)
        m = resample(mask[None].to(torch.uint8).cpu(), spacing, target, labels=True)
        scan = {"arrays": {"image": x, "mask": m}, "affine": np.diag([*target, 1.0]),
                "paths": {"image": "the lesion's crop", "mask": "the lesion's mask"}}  # fmt: skip
        filled, _ = translate(self.model, scan, self.batch_size, self.device)
        back = torch.nn.functional.interpolate(filled[None], size=tuple(image.shape), mode="trilinear",
                                               align_corners=False)[0, 0]  # fmt: skip
        return back.to(image.device)

    def render(self, crop: LesionCrop, record: LesionRecord) -> tuple[Tensor, dict[str, Any]]:
        spacing, shape, image = crop.spacing_mm, crop.shape, crop.image
        sigma_vox = [s / h for s, h in zip(blur_sd_mm(record), spacing, strict=True)]
        inner, outer = surround_shell_mm(record, spacing)
        mask = shape.mask & crop.inside
        distance = distance_mm(mask, spacing, outer)
        shell = (distance > inner) & (distance <= outer) & crop.organ & crop.inside
        if not bool(shell.any()) or not bool(mask.any()):
            raise InputError(f"lesion {record.index}: no organ voxels around it to measure its contrast "
                             f"against ({inner:.1f} to {outer:.1f} mm from it); the organ is thin here")  # fmt: skip
        background = float(image[shell].double().mean())
        painted = self._paint(image, shape.occupancy > 0, spacing)
        m = smooth(shape.occupancy, sigma_vox)
        base = image + m * (painted - image)
        shift = 0.0
        look = record.intensity
        if self.match_contrast:
            scale = background if look.units == "relative" else 1.0
            weight = float(m[mask].double().mean())
            shift = (look.contrast * scale + background - float(base[mask].double().mean())) / max(weight, 1e-6)
        out = torch.where(m != 0, base + shift * m, image)  # untouched voxels keep their bits
        info = {"checkpoint": self.checkpoint, "checkpoint_sha256": self.sha256, "checkpoint_step": self.step,
                "surroundings_mean": background, "shell_mm": [inner, outer], "contrast_shift": shift,
                "painted_contrast": float(painted[mask].double().mean()) - background}  # fmt: skip
        return out, info
