"""Paired translation, `pix2pix` and `label2image`: adversarial loss on (condition, image) pairs plus a
distance to the paired target (and optionally discriminator features and a user's perceptual network)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from medgan.config import Section
from medgan.errors import ConfigError, InputError, describe
from medgan.training import losses
from medgan.training.objectives.base import Objective, register_objective
from medgan.training.precision import layout_of

__all__ = ["PairedGAN", "load_feature_network"]


class PairedGAN(Objective):
    """G maps the task's condition (its `translates` input) to the target `image`; D sees both, concatenated."""

    def setup(self, options: Section) -> None:
        self.reconstruction, self.reconstruction_weight = options.reconstruction, options.reconstruction_weight
        self.adversarial_weight = options.adversarial_weight
        self.feature_matching_weight = options.feature_matching_weight
        self.perceptual_weight = options.perceptual_weight
        self.perceptual_network = load_feature_network(options.perceptual_network, self.device)
        self.labels_in = any(i.is_labels for i in self.task.inputs if i.key in (self.task.translates or ()))
        if self.feature_matching_weight > 0 and not hasattr(self.nets["D"], "forward_features"):
            raise ConfigError("loss.feature_matching_weight needs a patch discriminator with forward_features")

    def _condition(self, batch: dict[str, Tensor]) -> Tensor:
        x = self.task.generator_input(batch, self.nets["G"])
        return x.to(batch["image"].dtype).contiguous(memory_format=layout_of(batch["image"]))

    def generate(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        condition = self._condition(batch)
        return {"image": self.run["G"](condition), "condition": condition}

    def d_loss(self, batch, fakes):
        c = fakes["condition"]
        loss, stats = self._d_terms("D", torch.cat([c, batch["image"]], 1), torch.cat([c, fakes["image"].detach()], 1))
        return loss, {"loss_d": loss.detach(), **stats}

    def g_loss(self, batch, fakes):
        c, fake, real = fakes["condition"], fakes["image"], batch["image"]
        adv = self._g_adv("D", torch.cat([c, fake], 1))
        rec = losses.reconstruction_loss(self.reconstruction, fake, real)
        loss = self.adversarial_weight * adv + self.reconstruction_weight * rec
        stats = {"loss_g_adv": adv.detach(), "loss_rec": rec.detach()}
        if self.feature_matching_weight > 0:
            with torch.no_grad():  # the module itself: D keeps no gradients in this phase, so none to reduce
                _, real_features = self.nets["D"].forward_features(torch.cat([c, real], 1))
            _, fake_features = self.nets["D"].forward_features(torch.cat([c, fake], 1))
            fm = losses.feature_matching_loss(real_features, fake_features)
            loss, stats["loss_fm"] = loss + self.feature_matching_weight * fm, fm.detach()
        if self.perceptual_weight > 0:
            perceptual = losses.feature_loss(self.perceptual_network, fake, real)
            loss, stats["loss_perceptual"] = loss + self.perceptual_weight * perceptual, perceptual.detach()
        return loss, {"loss_g": loss.detach(), **stats}

    def real_inputs(self, batch):
        return [("D", torch.cat([self._condition(batch), batch["image"]], 1), None)]

    def preview(self, generators, batch, seed):
        condition = self._condition(batch)
        shown = condition
        if self.labels_in:  # one-hot label maps: label values spread over [-1, 1] for display
            shown = condition.argmax(1, keepdim=True).float() / max(condition.shape[1] - 1, 1) * 2 - 1
        return [shown, generators["G"](condition), batch["image"]]


def load_feature_network(path: str | None, device: torch.device) -> Any:
    """The user's feature network for the perceptual loss, frozen: a `torch.export` program (`.pt2`,
    `torch.export.save`) or a TorchScript file (`torch.jit.save`). Nothing is downloaded."""
    if not path:
        return None
    try:
        if path.endswith(".pt2"):
            network = torch.export.load(path).module().to(device)  # an exported graph has no train/eval modes
        else:
            network = torch.jit.load(path, map_location=device).eval()
    except (OSError, RuntimeError, ValueError) as err:
        raise InputError(
            f"not a loadable feature network (torch.export .pt2 or TorchScript; {describe(err, 120)})", path=path
        ) from None
    for param in network.parameters():
        param.requires_grad_(False)
    return network


register_objective("pix2pix", PairedGAN)
register_objective("label2image", PairedGAN)
