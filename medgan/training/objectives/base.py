"""What every objective shares: networks by role, the adversarial terms, augmentation and lazy R1.

The loop (`trainer.py`) knows nothing of tasks. Each step it calls, in order,

    fakes = objective.generate(batch)            # generators run once; their graph is kept
    loss, stats = objective.d_loss(batch, fakes)  # discriminator phase (fakes detached)
    loss, stats = objective.d_regularizer(batch)  # every r1_interval_steps, in float32 (lazy R1)
    loss, stats = objective.g_loss(batch, fakes)  # generator phase

and, for the sample grids, `objective.preview(generators, batch, seed)`. A task's declaration
(`medgan.tasks`) says which networks exist and what they read; its objective says what each
player minimises.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from medgan.config import Section
from medgan.registry import Registry
from medgan.tasks.base import TASKS, Task
from medgan.training import losses

__all__ = ["OBJECTIVES", "Objective", "Stats", "register_objective"]

OBJECTIVES: Registry = Registry("objective")  # task name -> Objective factory (the class with its task bound)
Stats = dict[str, Tensor]


def register_objective(task: str, cls: type[Objective]) -> None:
    """Register `cls` as the objective of the declared task `task` (the declaration bound to it)."""
    OBJECTIVES.register(task)(functools.partial(cls, task=TASKS.get(task)))


class Objective:
    """Shared machinery for the objectives of every task."""

    def __init__(
        self,
        nets: dict[str, nn.Module],
        task: Task,
        options: Section | None = None,  # the task's options (the config's `loss` section); None: defaults
        gan_loss: str = "logistic",  # logistic (non-saturating), hinge, lsgan or wgan-gp
        r1_gamma: float = 0.0,  # R1 weight; the regularizer is off at 0
        r1_interval_steps: int = 16,  # lazy R1 is scaled by this so its average strength is r1_gamma
        gp_weight: float = 10.0,  # wgan-gp penalty weight
        reconstruction_weight: float = 1.0,  # L1 of a discriminator's reconstruction head on real inputs
        augment: Callable[[Tensor], Tensor] | None = None,  # applied to every discriminator input
        seed: int = 0,  # noise for latents and penalties (per process)
        device: str | torch.device = "cpu",
    ):
        missing = [role for role in task.roles if role not in nets]
        if missing:
            raise ValueError(f"task {task.name} needs networks {missing}")
        self.task = task
        self.nets = nets  # the modules themselves: parameters, state dicts, EMA
        self.eager: dict[str, Callable[..., Any]] = dict(nets)  # as called for penalties (DDP-wrapped when distributed)
        self.run: dict[str, Callable[..., Any]] = dict(nets)  # as called for the losses (also compiled, if asked)
        self.gan_loss, self.gp_weight, self.reconstruction_weight = gan_loss, gp_weight, reconstruction_weight
        self.r1_gamma, self.r1_interval_steps = r1_gamma, r1_interval_steps
        self.augment = augment or (lambda x: x)
        self.noise = torch.Generator(device=device)
        self.noise.manual_seed(seed)
        self.device = torch.device(device)
        self.seed = seed
        self.setup(options if options is not None else task.Options())

    def setup(self, options: Section) -> None:
        """Read the task's own options (the fields of `task.Options`)."""

    def generators(self) -> dict[str, nn.Module]:
        return {role: self.nets[role] for role in self.task.generators()}

    def discriminators(self) -> dict[str, nn.Module]:
        return {r: self.nets[r] for r, kind in self.task.roles.items() if kind == "discriminator"}

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Call every network through `wrap(net)` (DistributedDataParallel), penalties included."""
        self.eager = {name: wrap(net) for name, net in self.nets.items()}
        self.run = dict(self.eager)

    def compile(self, compiler: Callable[[nn.Module], Callable[..., Any]]) -> None:
        """Use `compiler(net)` for forward passes; penalties that differentiate twice stay eager."""
        self.run = {name: compiler(net) for name, net in self.eager.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"noise": self.noise.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.noise.set_state(state["noise"])

    # The adversarial pieces every task shares.
    def _logits(self, name: str, x: Tensor, labels: Tensor | None = None, reconstruct: bool = False) -> Any:
        """D's logits on augmented `x`; with `reconstruct`, (logits, its reconstruction head's error on what it saw)."""
        x = self.augment(x)
        if reconstruct:
            logits, decoded = self.run[name](x, labels, reconstruct=True)
            return logits, self.nets[name].reconstruction_error(x, decoded)
        return self.run[name](x, labels) if labels is not None else self.run[name](x)

    def _d_terms(self, name: str, real: Tensor, fake: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Stats]:
        if getattr(self.nets[name], "reconstructs", False):  # its self-supervised head redraws the reals it saw
            real_logits, error = self._logits(name, real, labels, reconstruct=True)
        else:
            real_logits, error = self._logits(name, real, labels), None
        fake_logits = self._logits(name, fake.detach(), labels)
        loss = losses.d_loss(self.gan_loss, real_logits, fake_logits)
        if error is not None:
            loss = loss + self.reconstruction_weight * error
        if self.gan_loss == "wgan-gp" and self.gp_weight > 0:
            eager = self.eager[name]
            with torch.autocast(self.device.type, enabled=False):
                penalty = losses.gradient_penalty(
                    lambda x: eager(self.augment(x), labels) if labels is not None else eager(self.augment(x)),
                    real, fake, generator=self.noise,
                )  # fmt: skip
            loss = loss + self.gp_weight * penalty
        stats = {"real_sign": _mean_sign(real_logits), "real_logit": _mean(real_logits),
                 "fake_logit": _mean(fake_logits)}  # fmt: skip
        if error is not None:
            stats["loss_recon"] = error.detach()
        return loss, stats

    def _g_adv(self, name: str, fake: Tensor, labels: Tensor | None = None) -> Tensor:
        return losses.g_loss(self.gan_loss, self._logits(name, fake, labels))

    def _r1(self, name: str, real: Tensor, labels: Tensor | None = None) -> Tensor:
        real = self.augment(real.detach().float()).detach().requires_grad_(True)
        net = self.eager[name]
        logits = net(real, labels) if labels is not None else net(real)
        return losses.r1_penalty(logits, real) * (self.r1_gamma / 2) * self.r1_interval_steps

    def d_regularizer(self, batch: dict[str, Tensor]) -> tuple[Tensor, Stats] | None:
        """Lazy R1 on real images (None when off); call in float32 every `r1_interval_steps`."""
        if self.r1_gamma <= 0:
            return None
        penalty = sum(self._r1(name, real, labels) for name, real, labels in self.real_inputs(batch))
        return penalty, {"loss_r1": penalty.detach()}

    def real_inputs(self, batch: dict[str, Tensor]) -> list[tuple[str, Tensor, Tensor | None]]:
        """(discriminator, its real input, labels) for R1."""
        raise NotImplementedError

    def generate(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def d_loss(self, batch: dict[str, Tensor], fakes: dict[str, Tensor]) -> tuple[Tensor, Stats]:
        raise NotImplementedError

    def g_loss(self, batch: dict[str, Tensor], fakes: dict[str, Tensor]) -> tuple[Tensor, Stats]:
        raise NotImplementedError

    def preview(self, generators: dict[str, nn.Module], batch: dict[str, Tensor], seed: int) -> list[Tensor]:
        """Rows of a sample grid (each `[N, C, *spatial]` in [-1, 1]), from the given (EMA) generators."""
        raise NotImplementedError


def _mean(logits: Any) -> Tensor:
    if isinstance(logits, Tensor):  # one output: one reduction (the usual case, kept cheap on a GPU)
        return logits.detach().float().mean()
    return torch.stack([t.detach().float().mean() for t in logits]).mean()


def _mean_sign(logits: Any) -> Tensor:
    if isinstance(logits, Tensor):
        return logits.detach().sign().float().mean()
    return torch.stack([t.detach().sign().float().mean() for t in logits]).mean()
