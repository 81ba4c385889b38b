"""Tiny configurations of every registered network and inputs that fit them, shared by the model tests.

A network registered without an entry here fails `test_every_registered_network_has_a_tiny_config`, so that it
is tested by the parametrized contract tests the day it lands.
"""

from __future__ import annotations

import torch
from torch import nn

from medgan.models import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator

SIZE = 16  # voxels per axis of every tiny test image
BATCH = 4

TINY_GENERATORS: dict[str, dict] = {
    "stylegan": {
        "image_size": SIZE,
        "latent_dim": 16,
        "base_channels": 8,
        "max_channels": 16,
        "style_dim": 16,
        "mapping_layers": 2,
    },
    "resgen": {"image_size": SIZE, "latent_dim": 16, "base_channels": 8, "max_channels": 16},
    "unet": {"channels": 8, "max_channels": 16, "depth": 3},
    "resnet": {"channels": 8, "num_blocks": 2},
    "dncnn": {"channels": 8, "depth": 4},
    "spade": {
        "num_labels": 3,
        "image_size": SIZE,
        "base_channels": 8,
        "max_channels": 16,
        "num_upsamples": 2,
        "hidden_channels": 8,
    },
}
TINY_DISCRIMINATORS: dict[str, dict] = {
    "resnet": {"image_size": SIZE, "base_channels": 8, "max_channels": 16},
    "patchgan": {"num_layers": 2, "channels": 8},
    "multiscale_patchgan": {"num_layers": 1, "channels": 8, "num_scales": 2},
}
# Networks whose constructor takes num_classes (class-conditional when > 0).
CONDITIONAL = [("generator", "stylegan"), ("generator", "resgen"), ("discriminator", "resnet")]

CASES = [("generator", name) for name in GENERATORS.names()] + [
    ("discriminator", name) for name in DISCRIMINATORS.names()
]
CASE_IDS = [f"{role[0].upper()}-{name}" for role, name in CASES]


def build_tiny(role: str, name: str, spatial_dims: int, **overrides) -> nn.Module:
    """The tiny configuration of `name`, with `overrides`."""
    table, build = (
        (TINY_GENERATORS, build_generator) if role == "generator" else (TINY_DISCRIMINATORS, build_discriminator)
    )
    return build(name, spatial_dims=spatial_dims, **{**table[name], **overrides})


def is_latent_generator(model: nn.Module) -> bool:
    return model.kind == "latent" and hasattr(model, "latent_dim")


def example_inputs(model: nn.Module, batch: int = BATCH, labels: torch.Tensor | None = None) -> tuple:
    """Random inputs of the right kind and size for a tiny `model` (labels for class-conditional ones)."""
    spatial = (SIZE,) * model.spatial_dims
    if getattr(model, "num_classes", 0) > 0 and labels is None:
        labels = torch.arange(batch) % model.num_classes
    if is_latent_generator(model):
        z = torch.randn(batch, model.latent_dim)
        return (z,) if labels is None else (z, labels)
    if model.kind == "label":
        return (torch.randint(0, model.num_labels, (batch, *spatial)),)
    x = torch.randn(batch, model.in_channels, *spatial)
    return (x,) if labels is None else (x, labels)


def as_list(output: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return output if isinstance(output, list) else [output]


def scalar_loss(output: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """A loss that depends on every output element (mean of squares plus mean, so no symmetric cancellation)."""
    return sum((o.float().square().mean() + o.float().mean()) for o in as_list(output))


def run(model: nn.Module, inputs: tuple, seed: int = 0) -> torch.Tensor | list[torch.Tensor]:
    """Forward with the global RNG seeded, so noise inputs and random latents repeat between calls."""
    torch.manual_seed(seed)
    return model(*inputs)
