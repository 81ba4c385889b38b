"""medgan's networks: registries of generators and discriminators, built by short name from keyword arguments.

    from medgan.models import build_generator, build_discriminator
    G = build_generator("stylegan", spatial_dims=3, image_size=128, latent_dim=256)
    D = build_discriminator("resnet", spatial_dims=3, image_size=128)

Every network takes `spatial_dims` (2 or 3), works on [B, C, *spatial] tensors, exposes `kind`, `spatial_dims` and
`check_input_size(shape)`, and raises `ConfigError` for arguments or shapes it cannot take. See docs/models.md.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from torch import nn

from medgan.errors import ConfigError
from medgan.models import denoisers, discriminators, image2image, resgen, spade, stylegan  # noqa: F401  (registers)
from medgan.models.registries import DISCRIMINATORS, GENERATORS
from medgan.models.summary import describe
from medgan.registry import Registry

__all__ = ["DISCRIMINATORS", "GENERATORS", "build_discriminator", "build_generator", "describe", "network_arguments"]


def network_arguments(registry: Registry, name: str) -> list[str]:
    """The keyword arguments that `registry` entry `name` accepts."""
    signature = inspect.signature(registry.get(name))
    return [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _build(registry: Registry, name: str, kwargs: dict[str, Any]) -> nn.Module:
    valid = network_arguments(registry, name)
    for key in kwargs:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{registry.kind} {name!r} has no argument {key!r}{hint} (valid: {', '.join(valid)})")
    missing = [
        p.name
        for p in inspect.signature(registry.get(name)).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty and p.name not in kwargs
    ]
    if missing:
        raise ConfigError(f"{registry.kind} {name!r} needs argument(s) {', '.join(missing)}")
    return registry.build(name, **kwargs)


def build_generator(name: str, **kwargs: Any) -> nn.Module:
    """Build `GENERATORS[name](**kwargs)`; unknown names and arguments raise ConfigError with a did-you-mean."""
    return _build(GENERATORS, name, kwargs)


def build_discriminator(name: str, **kwargs: Any) -> nn.Module:
    """Build `DISCRIMINATORS[name](**kwargs)`; unknown names and arguments raise ConfigError with a did-you-mean."""
    return _build(DISCRIMINATORS, name, kwargs)
