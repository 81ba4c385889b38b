"""Unpaired translation (Zhu et al. 2017): adversarial terms per domain, cycle and identity consistency,
and a history of fakes for each discriminator."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from medgan.config import Section
from medgan.training.objectives.base import Objective, register_objective
from medgan.training.precision import layout_of

__all__ = ["CycleGAN", "ImagePool"]


class ImagePool:
    """A history of generated images for the discriminator (Shrivastava et al. 2017, as CycleGAN trains).

    Until `size` images are held, each new fake is stored and shown as it is. Then each is shown as it is
    with probability 1/2, or swapped for a random stored one, which it replaces. Decisions come from the
    pool's own CPU generator, and the pool is part of the checkpoint, so a resumed run continues exactly.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.images = size, []
        self.rng = torch.Generator().manual_seed(seed)

    def __call__(self, fakes: Tensor) -> Tensor:
        if self.size == 0:
            return fakes
        fakes = fakes.detach()
        shown = []
        for image in fakes.split(1):
            if len(self.images) < self.size:
                self.images.append(image.clone())
                shown.append(image)
            elif torch.rand((), generator=self.rng).item() < 0.5:
                index = int(torch.randint(self.size, (), generator=self.rng))
                shown.append(self.images[index])
                self.images[index] = image.clone()
            else:
                shown.append(image)
        return torch.cat(shown).contiguous(memory_format=layout_of(fakes))

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.get_state(), "images": [image.cpu() for image in self.images]}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.rng.set_state(state["rng"])
        self.images = [image.to(device) for image in state["images"]]


class CycleGAN(Objective):
    """G_ab and G_ba translate between the domains' images (batch keys `a` and `b`); D_a and D_b judge each."""

    def setup(self, options: Section) -> None:
        self.cycle_weight, self.identity_weight = options.cycle_weight, options.identity_weight
        self.pools = {key: ImagePool(options.image_pool_size, self.seed + offset)
                      for offset, key in enumerate(("fake_a", "fake_b"), start=1)}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pools": {key: pool.state_dict() for key, pool in self.pools.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for key, pool in self.pools.items():
            if key in state.get("pools", {}):  # checkpoints from before the pool start with an empty one
                pool.load_state_dict(state["pools"][key], self.device)

    def generate(self, batch):
        a, b, run = batch["a"], batch["b"], self.run
        fakes = {"fake_b": run["G_ab"](a), "fake_a": run["G_ba"](b)}
        fakes["cycle_a"], fakes["cycle_b"] = run["G_ba"](fakes["fake_b"]), run["G_ab"](fakes["fake_a"])
        if self.identity_weight > 0:
            fakes["same_b"], fakes["same_a"] = run["G_ab"](b), run["G_ba"](a)
        return fakes

    def d_loss(self, batch, fakes):
        loss_a, stats_a = self._d_terms("D_a", batch["a"], self.pools["fake_a"](fakes["fake_a"]))
        loss_b, stats_b = self._d_terms("D_b", batch["b"], self.pools["fake_b"](fakes["fake_b"]))
        loss = loss_a + loss_b
        stats = {key: (stats_a[key] + stats_b[key]) / 2 for key in stats_a}
        return loss, {"loss_d": loss.detach(), "loss_d_a": loss_a.detach(), "loss_d_b": loss_b.detach(), **stats}

    def g_loss(self, batch, fakes):
        adv = self._g_adv("D_b", fakes["fake_b"]) + self._g_adv("D_a", fakes["fake_a"])
        cycle = F.l1_loss(fakes["cycle_a"].float(), batch["a"].float()) + F.l1_loss(
            fakes["cycle_b"].float(), batch["b"].float()
        )
        loss = adv + self.cycle_weight * cycle
        stats = {"loss_g_adv": adv.detach(), "loss_cycle": cycle.detach()}
        if self.identity_weight > 0:
            same = F.l1_loss(fakes["same_b"].float(), batch["b"].float()) + F.l1_loss(
                fakes["same_a"].float(), batch["a"].float()
            )
            loss, stats["loss_identity"] = loss + self.cycle_weight * self.identity_weight * same, same.detach()
        return loss, {"loss_g": loss.detach(), **stats}

    def real_inputs(self, batch):
        return [("D_a", batch["a"], None), ("D_b", batch["b"], None)]

    def preview(self, generators, batch, seed):
        return [batch["a"], generators["G_ab"](batch["a"]), batch["b"], generators["G_ba"](batch["b"])]


register_objective("cyclegan", CycleGAN)
