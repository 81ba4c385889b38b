"""Exponential moving average of generator weights, with the halflife counted in images (EDM).

    ema = EMA({"G": generator}, halflife_images=10_000, rampup_ratio=0.05)
    ema.update(images_seen=step * batch, batch_images=batch)   # after each generator step
    ema.modules["G"]                                           # the averaged copy, for sampling

beta = 0.5 ** (batch_images / halflife) halves the old weights' share every `halflife`
images, whatever the batch size or number of GPUs. With a ramp-up, the halflife is at most
`rampup_ratio * images_seen`, so early, poor weights are forgotten quickly.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["EMA", "ema_beta"]


def ema_beta(images_seen: int, batch_images: int, halflife_images: float, rampup_ratio: float | None) -> float:
    """The weight kept from the old average after a step of `batch_images` images."""
    halflife = halflife_images
    if rampup_ratio is not None:
        halflife = min(halflife, images_seen * rampup_ratio)
    if halflife <= 0:
        return 0.0
    return 0.5 ** (batch_images / halflife)


class EMA:
    """Averaged copies of some modules; buffers (e.g. normalization statistics) are copied as they are."""

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        halflife_images: float = 10_000,  # images over which an old weight's share halves
        rampup_ratio: float | None = 0.05,  # halflife <= ratio x images seen; None: no ramp-up
    ):
        self.halflife_images = float(halflife_images)
        self.rampup_ratio = rampup_ratio
        self.sources = dict(modules)
        self._copies = {name: copy.deepcopy(m).requires_grad_(False).eval() for name, m in modules.items()}
        self._pending_copy = False  # halflife 0: copy the weights only when someone looks

    @property
    def modules(self) -> dict[str, nn.Module]:
        """The averaged modules (eval mode, no gradients)."""
        if self._pending_copy:
            self._blend(0.0)
        return self._copies

    @torch.no_grad()
    def update(self, images_seen: int, batch_images: int) -> None:
        beta = ema_beta(images_seen, batch_images, self.halflife_images, self.rampup_ratio)
        if beta == 0.0:  # the average is the current weights: skip a copy every step
            self._pending_copy = True
        else:
            if self._pending_copy:
                self._blend(0.0)
            self._blend(beta)

    @torch.no_grad()
    def _blend(self, beta: float) -> None:
        for name, source in self.sources.items():
            target = self._copies[name]
            ema_params = list(target.parameters())
            params = [p.detach() for p in source.parameters()]
            if beta == 0.0:
                torch._foreach_copy_(ema_params, params)
            else:  # ema = params + beta * (ema - params), one fused kernel over all tensors
                torch._foreach_lerp_(ema_params, params, 1.0 - beta)
            buffers = list(target.buffers())
            if buffers:  # normalisation statistics are copied, not averaged: one fused launch for all
                torch._foreach_copy_(buffers, [b.detach() for b in source.buffers()])
        self._pending_copy = False

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {name: module.state_dict() for name, module in self.modules.items()}

    def load_state_dict(self, state: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        for name, module in self._copies.items():
            module.load_state_dict(state[name])
        self._pending_copy = False
