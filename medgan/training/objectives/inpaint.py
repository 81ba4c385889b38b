"""The objective of `inpaint`: adversarial loss on the completed image beside its mask, plus L1 to the real
image inside and outside the region with separate weights. Samples without a mask file get a random
one (ellipsoids or brush strokes, 2D and 3D), drawn on the training device from the objective's own
noise generator, so a resumed run draws the same masks."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from medgan.config import Section
from medgan.tasks.inpaint import composite, masked_input
from medgan.training.objectives.base import Objective, Stats, register_objective
from medgan.training.precision import layout_of

__all__ = ["InpaintGAN", "random_masks"]


class InpaintGAN(Objective):
    def setup(self, options: Section) -> None:
        self.hole_weight, self.valid_weight = options.hole_weight, options.valid_weight
        self.shapes, self.mask_size = list(options.mask_shapes), tuple(options.mask_size)
        self._mask: Tensor | None = None  # this step's masks, for R1 on the real images

    def _masks(self, batch: dict[str, Tensor]) -> Tensor:
        if "mask" in batch:
            return (batch["mask"] > 0).any(dim=1, keepdim=True).to(batch["image"].dtype)
        image = batch["image"]
        masks = random_masks(image.shape[0], image.shape[2:], self.shapes, self.mask_size, self.noise)
        return masks.to(image.dtype).contiguous(memory_format=layout_of(image))

    def generate(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        image = batch["image"]
        mask = self._masks(batch)
        self._mask = mask
        fake = self.run["G"](masked_input(image, mask).contiguous(memory_format=layout_of(image)))
        return {"image": fake, "completed": composite(fake, image, mask), "mask": mask}

    def _judged(self, image: Tensor, mask: Tensor) -> Tensor:
        return torch.cat([image, mask.to(image.dtype)], dim=1).contiguous(memory_format=layout_of(image))

    def d_loss(self, batch: dict[str, Tensor], fakes: dict[str, Tensor]) -> tuple[Tensor, Stats]:
        mask = fakes["mask"]
        loss, stats = self._d_terms("D", self._judged(batch["image"], mask), self._judged(fakes["completed"], mask))
        return loss, {"loss_d": loss.detach(), **stats}

    def g_loss(self, batch: dict[str, Tensor], fakes: dict[str, Tensor]) -> tuple[Tensor, Stats]:
        mask, fake, real = fakes["mask"].float(), fakes["image"].float(), batch["image"].float()
        adv = self._g_adv("D", self._judged(fakes["completed"], fakes["mask"]))
        error = (fake - real).abs()
        hole = (error * mask).sum() / (mask.sum() * real.shape[1]).clamp(min=1.0)
        valid = (error * (1 - mask)).sum() / ((1 - mask).sum() * real.shape[1]).clamp(min=1.0)
        loss = adv + self.hole_weight * hole + self.valid_weight * valid
        return loss, {"loss_g": loss.detach(), "loss_g_adv": adv.detach(), "loss_hole": hole.detach(),
                      "loss_valid": valid.detach()}  # fmt: skip

    def real_inputs(self, batch: dict[str, Tensor]) -> list[tuple[str, Tensor, Tensor | None]]:
        mask = self._mask if self._mask is not None else self._masks(batch)
        return [("D", self._judged(batch["image"], mask), None)]

    def preview(self, generators, batch, seed):
        """Rows: the input with its region blanked, the completed image, the real image (fixed masks per seed)."""
        image = batch["image"]
        if "mask" in batch:
            mask = self._masks(batch)
        else:
            fixed = torch.Generator(device=self.noise.device).manual_seed(seed)
            mask = random_masks(image.shape[0], image.shape[2:], self.shapes, self.mask_size, fixed).to(image.dtype)
        shown = masked_input(image, mask)[:, : image.shape[1]] - mask  # the region shown dark
        return [shown.clamp(-1, 1), composite(generators["G"](masked_input(image, mask)), image, mask), image]


def random_masks(
    count: int,
    shape: tuple[int, ...] | torch.Size,  # spatial size (2 or 3 axes)
    shapes: list[str],  # "ellipsoid" and/or "strokes", one chosen per mask
    size: tuple[float, float] = (0.1, 0.4),  # extent as a fraction of the field of view
    generator: torch.Generator | None = None,  # the device the masks are made on is this generator's
) -> Tensor:
    """`[count, 1, *shape]` masks in {0, 1}: a rotated ellipsoid or a brush stroke (a few thick segments) each."""
    device = generator.device if generator is not None else torch.device("cpu")
    dims = len(shape)
    extent = torch.tensor([float(n) for n in shape], device=device)
    axes = [torch.arange(n, device=device, dtype=torch.float32) for n in shape]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # [*shape, dims] voxel coordinates
    masks = []
    for _ in range(count):
        pick = int(torch.randint(len(shapes), (), generator=generator, device=device))
        low, high = size
        if shapes[pick] == "ellipsoid":
            radii = (low + (high - low) * torch.rand(dims, generator=generator, device=device)) * extent / 2
            centre = radii + torch.rand(dims, generator=generator, device=device) * (extent - 2 * radii).clamp(min=0)
            rotation, _ = torch.linalg.qr(torch.randn(dims, dims, generator=generator, device=device))
            local = (points - centre) @ rotation
            masks.append(((local / radii.clamp(min=0.5)) ** 2).sum(-1) <= 1.0)
        else:
            masks.append(_stroke(points, extent, low, high, generator, device))
    return torch.stack(masks)[:, None].float()


def _stroke(points: Tensor, extent: Tensor, low: float, high: float, generator, device) -> Tensor:
    """A brush stroke: 2 to 4 connected segments, each a capsule of one radius, within the field of view."""
    dims = extent.numel()
    radius = float((low + (high - low) * torch.rand((), generator=generator, device=device)) * extent.min() / 6)
    position = torch.rand(dims, generator=generator, device=device) * extent
    region = torch.zeros(points.shape[:-1], dtype=torch.bool, device=device)
    for _ in range(int(torch.randint(2, 5, (), generator=generator, device=device))):
        direction = torch.randn(dims, generator=generator, device=device)
        length = (low + (high - low) * torch.rand((), generator=generator, device=device)) * extent.min()
        end = (position + direction / direction.norm().clamp(min=1e-6) * length).clamp(min=0 * extent, max=extent - 1)
        segment = end - position
        t = ((points - position) @ segment / (segment @ segment).clamp(min=1e-6)).clamp(0, 1)
        closest = position + t[..., None] * segment
        region |= (points - closest).norm(dim=-1) <= max(radius, math.sqrt(dims) / 2)
        position = end
    return region


register_objective("inpaint", InpaintGAN)
