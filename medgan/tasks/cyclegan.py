"""Unpaired translation between two image sets, domain A (`data.source`) and domain B (`data.source_b`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field
from torch import Tensor

from medgan.config import Section
from medgan.tasks.base import TASKS, Task

__all__ = ["CycleGAN", "CycleOptions"]


class CycleOptions(Section):
    """CycleGAN's consistency terms and its history of fakes."""

    cycle_weight: float = Field(default=10.0, ge=0.0)  # A -> B -> A and B -> A -> B
    identity_weight: float = Field(default=0.5, ge=0.0)  # times cycle_weight, G_ab(b) ~ b
    image_pool_size: int = Field(default=50, ge=0)  # D also sees earlier fakes from this history; 0 off


class CycleGAN(Task):
    """Two generators (A -> B, B -> A) and a discriminator per domain; inference runs A -> B."""

    name = "cyclegan"
    roles: ClassVar[dict[str, str]] = {"G_ab": "generator", "G_ba": "generator",
                                       "D_a": "discriminator", "D_b": "discriminator"}  # fmt: skip
    generator_kinds: ClassVar[tuple[str, ...]] = ("image",)
    domains = ("a", "b")
    output_network = "G_ab"
    translates = ("image",)
    Options = CycleOptions

    def network_sizes(self, record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        a, b = record["channels"], record["domain_b"]["channels"]
        return {"G_ab": {"in_channels": a, "out_channels": b}, "G_ba": {"in_channels": b, "out_channels": a},
                "D_a": {"in_channels": a}, "D_b": {"in_channels": b}}  # fmt: skip

    def output_record(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        return record["domain_b"]  # B's modality, units and window, not A's

    def input_window(self, record: Mapping[str, Any], key: str) -> tuple[float, float]:
        return tuple(record["window"])  # domain A's

    def generator_input(self, inputs: Mapping[str, Tensor], generator: Any) -> Tensor:
        return inputs["image"]


TASKS.register("cyclegan")(CycleGAN())
