"""Task logic, one small class per family: what the generators make and what each player minimises.

The loop (`trainer.py`) knows nothing of tasks. Each step it calls, in order,

    fakes = objective.generate(batch)            # generators run once; their graph is kept
    loss, stats = objective.d_loss(batch, fakes)  # discriminator phase (fakes detached)
    loss, stats = objective.d_regularizer(batch)  # every r1_interval_steps, in float32 (lazy R1)
    loss, stats = objective.g_loss(batch, fakes)  # generator phase

A new task is a new registered class; the loop never changes. Variants of one family
(unconditional / class-conditional; pix2pix / label-map-to-image) are constructor values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medgan.errors import ConfigError
from medgan.registry import Registry
from medgan.training import losses

__all__ = ["OBJECTIVES", "CycleGAN", "LatentGAN", "Objective", "PairedGAN", "objective_class"]

OBJECTIVES: Registry = Registry("task")
Stats = dict[str, Tensor]


class Objective:
    """Shared machinery: networks by role, the adversarial terms, augmentation and R1."""

    ROLES: ClassVar[dict[str, str]] = {}  # network name -> "generator" or "discriminator"
    GENERATOR_KINDS: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        nets: dict[str, nn.Module],
        gan_loss: str = "logistic",  # logistic (non-saturating), hinge, lsgan or wgan-gp
        r1_gamma: float = 0.0,  # R1 weight; the regularizer is off at 0
        r1_interval_steps: int = 16,  # lazy R1 is scaled by this so its average strength is r1_gamma
        gp_weight: float = 10.0,  # wgan-gp penalty weight
        augment: Callable[[Tensor], Tensor] | None = None,  # applied to every discriminator input
        seed: int = 0,  # noise for latents and penalties (per process)
        device: str | torch.device = "cpu",
        **task_options: Any,
    ):
        missing = [role for role in self.ROLES if role not in nets]
        if missing:
            raise ValueError(f"{type(self).__name__} needs networks {missing}")
        self.nets = nets  # the modules themselves: parameters, state dicts, EMA
        self.eager: dict[str, Callable[..., Any]] = dict(nets)  # as called for penalties (DDP-wrapped when distributed)
        self.run: dict[str, Callable[..., Any]] = dict(nets)  # as called for the losses (also compiled, if asked)
        self.gan_loss, self.gp_weight = gan_loss, gp_weight
        self.r1_gamma, self.r1_interval_steps = r1_gamma, r1_interval_steps
        self.augment = augment or (lambda x: x)
        self.noise = torch.Generator(device=device)
        self.noise.manual_seed(seed)
        self.device = torch.device(device)
        self.seed = seed
        for role, kind in self.ROLES.items():
            if kind == "generator" and getattr(nets[role], "kind", None) not in self.GENERATOR_KINDS:
                raise ConfigError(
                    f"this task needs a {' or '.join(self.GENERATOR_KINDS)} generator, "
                    f"but generator {type(nets[role]).__name__} is of kind {getattr(nets[role], 'kind', None)!r}"
                )
        self.setup(**task_options)

    def setup(self, **options: Any) -> None:
        if options:
            raise ConfigError(f"unexpected options for this task: {sorted(options)}")

    @classmethod
    def network_kwargs(cls, record: dict[str, Any], **variant: Any) -> dict[str, dict[str, Any]]:
        """Sizes the data fixes for each role (filled into builders that take them); `variant`
        holds the task's preset constructor values (e.g. conditional=True)."""
        raise NotImplementedError

    def generators(self) -> dict[str, nn.Module]:
        return {r: self.nets[r] for r, kind in self.ROLES.items() if kind == "generator"}

    def discriminators(self) -> dict[str, nn.Module]:
        return {r: self.nets[r] for r, kind in self.ROLES.items() if kind == "discriminator"}

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Call every network through `wrap(net)` (DistributedDataParallel), penalties included."""
        self.eager = {name: wrap(net) for name, net in self.nets.items()}
        self.run = dict(self.eager)

    def compile(self, compiler: Callable[[nn.Module], Callable[..., Any]]) -> None:
        """Use `compiler(net)` for forward passes; penalties that differentiate twice stay eager."""
        self.run = {name: compiler(net) for name, net in self.eager.items()}

    def state_dict(self) -> dict[str, Tensor]:
        return {"noise": self.noise.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.noise.set_state(state["noise"])

    # The adversarial pieces every task shares.
    def _logits(self, name: str, x: Tensor, labels: Tensor | None = None) -> Any:
        x = self.augment(x)
        return self.run[name](x, labels) if labels is not None else self.run[name](x)

    def _d_terms(self, name: str, real: Tensor, fake: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Stats]:
        real_logits = self._logits(name, real, labels)
        fake_logits = self._logits(name, fake.detach(), labels)
        loss = losses.d_loss(self.gan_loss, real_logits, fake_logits)
        if self.gan_loss == "wgan-gp" and self.gp_weight > 0:
            eager = self.eager[name]
            with torch.autocast(self.device.type, enabled=False):
                penalty = losses.gradient_penalty(
                    lambda x: eager(self.augment(x), labels) if labels is not None else eager(self.augment(x)),
                    real, fake, generator=self.noise,
                )  # fmt: skip
            loss = loss + self.gp_weight * penalty
        return loss, {"real_sign": _mean_sign(real_logits), "real_logit": _mean(real_logits),
                      "fake_logit": _mean(fake_logits)}  # fmt: skip

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


def _mean(logits: Any) -> Tensor:
    if isinstance(logits, Tensor):  # one output: one reduction (the usual case, kept cheap on a GPU)
        return logits.detach().float().mean()
    return torch.stack([t.detach().float().mean() for t in logits]).mean()


def _mean_sign(logits: Any) -> Tensor:
    if isinstance(logits, Tensor):
        return logits.detach().sign().float().mean()
    return torch.stack([t.detach().sign().float().mean() for t in logits]).mean()


class LatentGAN(Objective):
    """Noise (and a class) to image: `unconditional` and `conditional` synthesis."""

    ROLES: ClassVar[dict[str, str]] = {"G": "generator", "D": "discriminator"}
    GENERATOR_KINDS = ("latent",)

    def setup(self, conditional: bool = False) -> None:
        self.conditional = conditional
        classes = getattr(self.nets["G"], "num_classes", 0) or 0
        if conditional and classes < 1:
            raise ConfigError("task conditional needs class labels: a data CSV with a 'label' column")

    @classmethod
    def network_kwargs(cls, record: dict[str, Any], conditional: bool = False) -> dict[str, dict[str, Any]]:
        classes = record["num_classes"] if conditional else 0
        return {"G": {"out_channels": record["channels"], "num_classes": classes},
                "D": {"in_channels": record["channels"], "num_classes": classes}}  # fmt: skip

    def _labels(self, batch: dict[str, Tensor]) -> Tensor | None:
        return batch["label"] if self.conditional else None

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
        labels = torch.arange(count, device=self.device) % g.num_classes if self.conditional else None
        return [g(z, labels)]


class PairedGAN(Objective):
    """Paired translation: `pix2pix` (image to image) and `label2image` (label map to image, SPADE)."""

    ROLES: ClassVar[dict[str, str]] = {"G": "generator", "D": "discriminator"}
    GENERATOR_KINDS = ("image", "label")

    def setup(self, condition: str = "source", reconstruction: str = "l1", reconstruction_weight: float = 100.0,
              feature_matching_weight: float = 0.0, perceptual_weight: float = 0.0,
              perceptual_network: Callable[[Tensor], Any] | None = None) -> None:  # fmt: skip
        self.condition = condition  # batch key of the input: "source" or "label_map"
        self.reconstruction, self.reconstruction_weight = reconstruction, reconstruction_weight
        self.feature_matching_weight = feature_matching_weight
        self.perceptual_weight, self.perceptual_network = perceptual_weight, perceptual_network
        if condition == "label_map" and self.nets["G"].kind != "label":
            raise ConfigError("task label2image needs a label-map generator (spade)")
        if condition == "source" and self.nets["G"].kind != "image":
            raise ConfigError("task pix2pix needs an image-to-image generator (unet or resnet)")
        if feature_matching_weight > 0 and not hasattr(self.nets["D"], "forward_features"):
            raise ConfigError("loss.feature_matching_weight needs a patch discriminator with forward_features")

    @classmethod
    def network_kwargs(cls, record: dict[str, Any], condition: str = "source") -> dict[str, dict[str, Any]]:
        channels = record["channels"]
        if condition == "label_map":  # the generator sees one-hot label maps
            labels = record["num_labels"]
            return {"G": {"out_channels": channels, "num_labels": labels}, "D": {"in_channels": labels + channels}}
        return {"G": {"in_channels": channels, "out_channels": channels}, "D": {"in_channels": 2 * channels}}

    def _condition(self, batch: dict[str, Tensor]) -> Tensor:
        x = batch[self.condition]
        if self.condition == "label_map":
            n = self.nets["G"].num_labels
            x = F.one_hot(x[:, 0].long().clamp(0, n - 1), n).movedim(-1, 1).to(batch["image"].dtype)
            return x.contiguous(memory_format=_layout(batch["image"]))
        return x

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
        loss = adv + self.reconstruction_weight * rec
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
        shown = condition if self.condition == "source" else condition.argmax(1, keepdim=True).float()
        if self.condition == "label_map":  # label values spread over [-1, 1] for display
            shown = shown / max(condition.shape[1] - 1, 1) * 2 - 1
        return [shown, generators["G"](condition), batch["image"]]


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
        return torch.cat(shown).contiguous(memory_format=_layout(fakes))

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.get_state(), "images": [image.cpu() for image in self.images]}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.rng.set_state(state["rng"])
        self.images = [image.to(device) for image in state["images"]]


class CycleGAN(Objective):
    """Unpaired translation between domains A and B (Zhu et al. 2017), with its history of fakes for D."""

    ROLES: ClassVar[dict[str, str]] = {"G_ab": "generator", "G_ba": "generator",
                                       "D_a": "discriminator", "D_b": "discriminator"}  # fmt: skip
    GENERATOR_KINDS = ("image",)

    def setup(self, cycle_weight: float = 10.0, identity_weight: float = 0.5, image_pool_size: int = 50) -> None:
        self.cycle_weight, self.identity_weight = cycle_weight, identity_weight
        self.pools = {key: ImagePool(image_pool_size, self.seed + offset)
                      for offset, key in enumerate(("fake_a", "fake_b"), start=1)}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pools": {key: pool.state_dict() for key, pool in self.pools.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for key, pool in self.pools.items():
            if key in state.get("pools", {}):  # checkpoints from before the pool start with an empty one
                pool.load_state_dict(state["pools"][key], self.device)

    @classmethod
    def network_kwargs(cls, record: dict[str, Any]) -> dict[str, dict[str, Any]]:
        a, b = record["channels"], record["domain_b"]["channels"]
        return {"G_ab": {"in_channels": a, "out_channels": b}, "G_ba": {"in_channels": b, "out_channels": a},
                "D_a": {"in_channels": a}, "D_b": {"in_channels": b}}  # fmt: skip

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


def _layout(x: Tensor) -> torch.memory_format:
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    if x.ndim == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
        return torch.channels_last_3d
    return torch.contiguous_format


def objective_class(task: str) -> type[Objective]:
    """The class behind a registered task name (for its ROLES and network_kwargs)."""
    return OBJECTIVES.get(task).func


# Each name is a class with its variant's constructor values: variants are config, not subclasses.
OBJECTIVES.register("unconditional")(functools.partial(LatentGAN, conditional=False))
OBJECTIVES.register("conditional")(functools.partial(LatentGAN, conditional=True))
OBJECTIVES.register("pix2pix")(functools.partial(PairedGAN, condition="source"))
OBJECTIVES.register("label2image")(functools.partial(PairedGAN, condition="label_map"))
OBJECTIVES.register("cyclegan")(functools.partial(CycleGAN))
