"""GAN losses and regularizers as pure functions of logits, images and networks.

Logits are a tensor (one per sample, `[B]`) or a list of logit maps (patch and multi-scale
discriminators); a list is averaged over its scales, each map over its elements. All losses
return a scalar averaged over the batch, in float32 whatever the autocast dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medgan.errors import ConfigError

__all__ = [
    "GAN_LOSSES",
    "d_loss",
    "feature_loss",
    "feature_matching_loss",
    "g_loss",
    "gradient_penalty",
    "r1_penalty",
    "reconstruction_loss",
]

Logits = Tensor | Sequence[Tensor]
GAN_LOSSES = ("logistic", "hinge", "lsgan", "wgan-gp")


def _scales(logits: Logits) -> list[Tensor]:
    return [logits.float()] if isinstance(logits, Tensor) else [t.float() for t in logits]


def _mean_over_scales(fn: Callable[[Tensor], Tensor], logits: Logits) -> Tensor:
    scales = _scales(logits)
    return sum(fn(t).mean() for t in scales) / len(scales)


def d_loss(kind: str, real_logits: Logits, fake_logits: Logits) -> Tensor:
    """The discriminator's loss: low when real logits are high and fake logits low."""
    if kind == "logistic":  # -log sigmoid(real) - log(1 - sigmoid(fake))
        return _mean_over_scales(lambda t: F.softplus(-t), real_logits) + _mean_over_scales(F.softplus, fake_logits)
    if kind == "hinge":
        return _mean_over_scales(lambda t: F.relu(1 - t), real_logits) + _mean_over_scales(
            lambda t: F.relu(1 + t), fake_logits
        )
    if kind == "lsgan":  # least squares with targets 1 (real) and 0 (fake), halved as in LSGAN/CycleGAN
        return 0.5 * (
            _mean_over_scales(lambda t: (t - 1) ** 2, real_logits) + _mean_over_scales(lambda t: t**2, fake_logits)
        )
    if kind == "wgan-gp":  # critic: E[D(fake)] - E[D(real)]; the penalty is added separately
        return _mean_over_scales(lambda t: t, fake_logits) - _mean_over_scales(lambda t: t, real_logits)
    raise ConfigError(f"unknown GAN loss {kind!r} (valid: {', '.join(GAN_LOSSES)})")


def g_loss(kind: str, fake_logits: Logits) -> Tensor:
    """The generator's loss on the discriminator's logits for its fakes."""
    if kind == "logistic":  # non-saturating: -log sigmoid(fake)
        return _mean_over_scales(lambda t: F.softplus(-t), fake_logits)
    if kind in ("hinge", "wgan-gp"):
        return _mean_over_scales(lambda t: -t, fake_logits)
    if kind == "lsgan":
        return _mean_over_scales(lambda t: (t - 1) ** 2, fake_logits)
    raise ConfigError(f"unknown GAN loss {kind!r} (valid: {', '.join(GAN_LOSSES)})")


def _logit_sum(logits: Logits) -> Tensor:
    return sum(t.float().sum() for t in _scales(logits))


def r1_penalty(real_logits: Logits, real_images: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): mean over samples of |grad_x D(x)|^2 on real images.

    `real_images` must have `requires_grad` set before the discriminator ran on them. The
    caller scales by gamma / 2 (and by the interval when it is applied lazily).
    """
    (grad,) = torch.autograd.grad(_logit_sum(real_logits), real_images, create_graph=True)
    return grad.float().square().flatten(1).sum(1).mean()


def gradient_penalty(
    critic: Callable[[Tensor], Logits],
    real_images: Tensor,
    fake_images: Tensor,
    generator: torch.Generator | None = None,  # draws the interpolation weights
) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): mean of (|grad D(x_hat)| - 1)^2 on random interpolates."""
    shape = (real_images.shape[0],) + (1,) * (real_images.ndim - 1)
    alpha = torch.rand(shape, device=real_images.device, generator=generator, dtype=torch.float32)
    mixed = (alpha * real_images.detach().float() + (1 - alpha) * fake_images.detach().float()).requires_grad_(True)
    (grad,) = torch.autograd.grad(_logit_sum(critic(mixed)), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def reconstruction_loss(kind: str, output: Tensor, target: Tensor) -> Tensor:
    """Mean absolute (l1) or squared (l2) voxel difference, in float32."""
    if kind == "l1":
        return F.l1_loss(output.float(), target.float())
    if kind == "l2":
        return F.mse_loss(output.float(), target.float())
    raise ConfigError(f"unknown reconstruction loss {kind!r} (valid: l1, l2)")


def feature_matching_loss(
    real_features: Sequence[Sequence[Tensor]], fake_features: Sequence[Sequence[Tensor]]
) -> Tensor:
    """pix2pixHD's feature matching: mean L1 between discriminator features of real and fake,
    averaged over scales and layers. `real_features[s][l]` is detached here."""
    terms = [
        F.l1_loss(fake.float(), real.detach().float())
        for real_scale, fake_scale in zip(real_features, fake_features, strict=True)
        for real, fake in zip(real_scale, fake_scale, strict=True)
    ]
    return sum(terms) / len(terms)


def feature_loss(network: Callable[[Tensor], Tensor | Sequence[Tensor]], output: Tensor, target: Tensor) -> Tensor:
    """Perceptual loss: mean L1 between a user-supplied network's features of output and target.

    The network returns one feature tensor or a list of them; it is used as given (its
    weights are the user's own, never downloaded) and receives gradients only through `output`.
    """
    with torch.no_grad():
        target_features = network(target)
    output_features = network(output)
    if isinstance(output_features, Tensor):
        output_features, target_features = [output_features], [target_features]
    terms = [F.l1_loss(o.float(), t.float()) for o, t in zip(output_features, target_features, strict=True)]
    return sum(terms) / len(terms)
