"""Noise (and a class) to image: the objective of `unconditional` and `conditional`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medgan.config import Section
from medgan.errors import ConfigError
from medgan.training.objectives.base import Objective, Stats, register_objective

__all__ = ["LatentGAN"]


class LatentGAN(Objective):
    """G draws images from noise (and the batch's class, when the task declares a class input); D judges them."""

    def setup(self, options: Section) -> None:
        self.class_key = next((i.key for i in self.task.inputs if i.kind == "class"), None)
        classes = getattr(self.nets["G"], "num_classes", 0) or 0
        if self.class_key is not None and classes < 1:
            raise ConfigError(f"task {self.task.name} needs class labels: a data CSV with a "
                              f"{self.class_key!r} column")  # fmt: skip

    def _labels(self, batch: dict[str, Tensor]) -> Tensor | None:
        return batch[self.class_key] if self.class_key is not None else None

    def generate(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        real = batch["image"]
        z = torch.randn(real.shape[0], self.nets["G"].latent_dim, generator=self.noise, device=real.device)
        return {"image": self.run["G"](z, self._labels(batch))}

    def d_loss(self, batch: dict[str, Tensor], fakes: dict[str, Tensor]) -> tuple[Tensor, Stats]:
        loss, stats = self._d_terms("D", batch["image"], fakes["image"], self._labels(batch))
        return loss, {"loss_d": loss.detach(), **stats}

    def g_loss(self, batch: dict[str, Tensor], fakes: dict[str, Tensor]) -> tuple[Tensor, Stats]:
        loss = self._g_adv("D", fakes["image"], self._labels(batch))
        return loss, {"loss_g": loss.detach()}

    def real_inputs(self, batch):
        return [("D", batch["image"], self._labels(batch))]

    def preview(self, generators: dict[str, nn.Module], batch: dict[str, Tensor], seed: int) -> list[Tensor]:
        """Samples from fixed noise (same seed, same images at every step), classes in turn."""
        g = generators["G"]
        count = batch["image"].shape[0]
        z = torch.randn(count, g.latent_dim, generator=torch.Generator().manual_seed(seed)).to(self.device)
        labels = torch.arange(count, device=self.device) % g.num_classes if self.class_key is not None else None
        return [g(z, labels)]


register_objective("unconditional", LatentGAN)
register_objective("conditional", LatentGAN)
