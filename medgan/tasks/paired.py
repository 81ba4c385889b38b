"""Paired translation: `pix2pix` (image to image) and `label2image` (label map to image, SPADE)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from medgan.config import Section
from medgan.data.records import Input
from medgan.tasks.base import TASKS, Task

__all__ = ["LabelToImage", "PairedOptions", "Pix2Pix", "one_hot"]


class PairedOptions(Section):
    """The generator's distance to its paired target, beside the adversarial loss."""

    reconstruction: Literal["l1", "l2"] = "l1"  # distance to the paired target
    reconstruction_weight: float = Field(default=100.0, ge=0.0)
    adversarial_weight: float = Field(default=1.0, ge=0.0)  # the generator's adversarial term (small for denoisers)
    feature_matching_weight: float = Field(default=0.0, ge=0.0)  # patch discriminators' features (pix2pixHD)
    perceptual_weight: float = Field(default=0.0, ge=0.0)  # distance in a user-supplied feature network
    perceptual_network: str | None = None  # your feature network: torch.export .pt2 or TorchScript; never downloaded

    @model_validator(mode="after")
    def _network_for_weight(self) -> PairedOptions:
        if self.perceptual_weight > 0 and not self.perceptual_network:
            raise ValueError("perceptual_weight > 0 needs perceptual_network: a .pt2 (torch.export) or TorchScript")
        return self


class Pix2Pix(Task):
    """A `source` image (CSV column) to its target `image`, voxel for voxel."""

    name = "pix2pix"
    generator_kinds: ClassVar[tuple[str, ...]] = ("image",)
    inputs = (Input("image"), Input("source"))
    translates = ("source",)
    Options = PairedOptions
    simulates = "source"
    target = "image"

    def network_sizes(self, record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        channels = record["channels"]
        return {"G": {"in_channels": channels, "out_channels": channels}, "D": {"in_channels": 2 * channels}}

    def generator_input(self, inputs: Mapping[str, Tensor], generator: Any) -> Tensor:
        return inputs["source"]


class LabelToImage(Task):
    """A tissue `label_map` (CSV column; labels 0, 1, 2, ...) to the `image` it labels; G sees one-hot maps."""

    name = "label2image"
    generator_kinds: ClassVar[tuple[str, ...]] = ("label",)
    inputs = (Input("image"), Input("label_map", "labels"))
    translates = ("label_map",)
    Options = PairedOptions
    target = "image"

    def network_sizes(self, record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        channels, labels = record["channels"], record["num_labels"]
        return {"G": {"out_channels": channels, "num_labels": labels}, "D": {"in_channels": labels + channels}}

    def generator_input(self, inputs: Mapping[str, Tensor], generator: Any) -> Tensor:
        return one_hot(inputs["label_map"], generator.num_labels)


def one_hot(label_map: Tensor, num_labels: int) -> Tensor:
    """`[B, 1, *spatial]` integer labels -> `[B, num_labels, *spatial]` float32 (labels past the last clamp to it)."""
    return F.one_hot(label_map[:, 0].long().clamp(0, num_labels - 1), num_labels).movedim(-1, 1).float()


TASKS.register("pix2pix")(Pix2Pix())
TASKS.register("label2image")(LabelToImage())
