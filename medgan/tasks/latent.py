"""Noise to image: `unconditional` synthesis, and `conditional` synthesis of a chosen class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from medgan.data.records import Input
from medgan.tasks.base import TASKS, Task

__all__ = ["Conditional", "Unconditional"]


class Unconditional(Task):
    name = "unconditional"
    generator_kinds: ClassVar[tuple[str, ...]] = ("latent",)
    conditional: ClassVar[bool] = False

    def network_sizes(self, record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        classes = record["num_classes"] if self.conditional else 0
        return {"G": {"out_channels": record["channels"], "num_classes": classes},
                "D": {"in_channels": record["channels"], "num_classes": classes}}  # fmt: skip


class Conditional(Unconditional):
    """Each scan has a class (a CSV `label` column, integers from 0); G and D see it."""

    name = "conditional"
    inputs = (Input("image"), Input("label", "class"))
    conditional = True


TASKS.register("unconditional")(Unconditional())
TASKS.register("conditional")(Conditional())
