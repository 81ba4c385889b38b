"""The two network registries. Entries register themselves when `medgan.models` is imported."""

from __future__ import annotations

from medgan.registry import Registry

GENERATORS: Registry = Registry("generator")
DISCRIMINATORS: Registry = Registry("discriminator")
