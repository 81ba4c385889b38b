"""`inpaint`: fill a masked region of a scan so that it fits the anatomy around it.

The generator sees the image with the region removed, plus the mask, and paints the region; the
result keeps the input outside the mask exactly. Masks come from a `mask` CSV column (a label file
per scan, any non-zero voxel is the region) or, for rows without one, are drawn at random in
training (ellipsoids and brush strokes, 2D and 3D). Lesion simulation renders lesion content with
a model trained on real lesion patches and their masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from medgan.config import Section
from medgan.data.records import Input
from medgan.tasks.base import TASKS, Task

__all__ = ["Inpaint", "InpaintOptions", "composite", "masked_input"]


class InpaintOptions(Section):
    """Distances to the real image inside and outside the region, and the random masks of training."""

    hole_weight: float = Field(default=20.0, ge=0.0)  # L1 inside the mask (mean over the region)
    valid_weight: float = Field(default=1.0, ge=0.0)  # L1 outside it (what G makes there is replaced anyway)
    mask_shapes: list[Literal["ellipsoid", "strokes"]] = Field(default_factory=lambda: ["ellipsoid", "strokes"])
    mask_size: tuple[float, float] = (0.1, 0.4)  # random masks: extent as a fraction of the field of view

    @field_validator("mask_shapes")
    @classmethod
    def _some_shape(cls, shapes: list[str]) -> list[str]:
        if not shapes:
            raise ValueError("needs at least one of ellipsoid, strokes")
        return shapes

    @field_validator("mask_size")
    @classmethod
    def _fractions(cls, size: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < size[0] <= size[1] <= 1.0:
            raise ValueError(f"needs 0 < low <= high <= 1 (fractions of the field of view), got {list(size)}")
        return size


class Inpaint(Task):
    """G: (image without the region, mask) -> image; D judges the completed image beside its mask."""

    name = "inpaint"
    generator_kinds: ClassVar[tuple[str, ...]] = ("image",)
    inputs = (Input("image"), Input("mask", "mask", required=False))
    translates = ("image", "mask")
    Options = InpaintOptions
    target = "image"

    def network_sizes(self, record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        channels = record["channels"]
        return {"G": {"in_channels": channels + 1, "out_channels": channels}, "D": {"in_channels": channels + 1}}

    def generator_input(self, inputs: Mapping[str, Tensor], generator: Any) -> Tensor:
        return masked_input(inputs["image"], inputs["mask"])

    def finish(self, output: Tensor, inputs: Mapping[str, Tensor]) -> Tensor:
        return composite(output, inputs["image"], inputs["mask"])


def _region(mask: Tensor) -> Tensor:
    """`[B, k, *spatial]` mask (any channel count: slabs) -> `[B, 1, *spatial]` float in {0, 1}."""
    return (mask > 0).any(dim=1, keepdim=True).float()


def masked_input(image: Tensor, mask: Tensor) -> Tensor:
    """The generator's input: the image with the region set to 0 (mid-window), and the region as a channel."""
    region = _region(mask).to(image.dtype)
    return torch.cat([image * (1 - region), region], dim=1)


def composite(output: Tensor, image: Tensor, mask: Tensor) -> Tensor:
    """The generator's output inside the region, the image itself outside it."""
    region = _region(mask).to(output.dtype)
    return output * region + image.to(output.dtype) * (1 - region)


TASKS.register("inpaint")(Inpaint())
