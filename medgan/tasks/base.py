"""What a task is, declared once: the inputs it reads, the networks it trains, what its generator makes.

A `Task` is a declaration, not training code. Datasets read its inputs, the network builder its
roles and sizes, the config its options model, and inference its generator input and output
description; the training objective that gives the task its losses (`medgan.training.objectives`)
is registered under the same name. Nothing outside a task's own module switches on its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor

from medgan.config import Section
from medgan.data.records import Input
from medgan.registry import Registry

__all__ = ["TASKS", "Input", "NoOptions", "Task"]


class NoOptions(Section):
    """A task without options of its own."""


class Task:
    """The declaration every task makes. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    roles: ClassVar[dict[str, str]] = {"G": "generator", "D": "discriminator"}  # network -> player
    generator_kinds: ClassVar[tuple[str, ...]] = ()  # which registered generators fit (their `kind`)
    inputs: ClassVar[tuple[Input, ...]] = (Input("image"),)
    # Unpaired tasks read one image set per domain, `data.source` and `data.source_b`; batches hold each
    # domain's images under these keys. Empty for tasks whose samples come from one set.
    domains: ClassVar[tuple[str, ...]] = ()
    output_network: ClassVar[str] = "G"  # the generator inference runs
    # What that generator reads at inference: None when it draws from noise; else the inputs it
    # translates (windowed images, label maps, masks), all on one voxel grid.
    translates: ClassVar[tuple[str, ...] | None] = None
    Options: ClassVar[type[Section]] = NoOptions  # its own settings, in the config's `loss` section
    # The input a degradation of the image can stand in for (`data.degrade`: simulated pairs); None: none.
    simulates: ClassVar[str | None] = None
    # The input the output should equal, for scoring on held-out pairs (`data.validation`); None: unpaired.
    target: ClassVar[str | None] = None

    def network_sizes(self, record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Per network: the sizes the data fixes (channels, classes, labels), filled into builders that take them."""
        raise NotImplementedError

    def output_record(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        """The data record of what `output_network` makes (modality, units, window, geometry)."""
        return record

    def input_window(self, record: Mapping[str, Any], key: str) -> tuple[float, float]:
        """The intensity window an image input was normalized with in training."""
        return tuple(record["source_window"] if key != "image" else record["window"])

    def generator_input(self, inputs: Mapping[str, Tensor], generator: Any) -> Tensor:
        """What the generator is called on, from the batch's inputs (images in [-1, 1], integer maps)."""
        raise NotImplementedError(f"task {self.name} draws from noise")

    def finish(self, output: Tensor, inputs: Mapping[str, Tensor]) -> Tensor:
        """The task's final image from the generator's output (a composite for inpainting)."""
        return output

    def generators(self) -> dict[str, str]:
        return {name: kind for name, kind in self.roles.items() if kind == "generator"}


TASKS: Registry = Registry("task")  # name -> the Task instance that declares it
