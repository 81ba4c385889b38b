"""Simulated training pairs: each clean sample's input made by a degradation on the training device.

With `data.degrade`, the dataset hands over clean images in physical units (HU for CT); every step
`SimulatedPairs` draws a fresh parameter record per sample (dose, SNR, slice thickness, ... within
the configured ranges) from its own seeded generator, degrades the batch where it lies (GPU or
CPU), and windows both to [-1, 1]: the clean image into `image`, the degraded one into the task's
simulated input (`source`). Resolution losses are brought back onto the clean grid, as the
enhancer sees thick-slice scans resampled to its grid at inference. The generator's state is
part of the checkpoint, so a resumed run degrades exactly as the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from medgan.data.transforms import to_unit
from medgan.errors import ConfigError
from medgan.training.precision import layout_of

__all__ = ["SimulatedPairs"]


class SimulatedPairs:
    def __init__(
        self,
        degradation: Any,  # a built degradation (medgan.data.degradations): sample() and apply()
        target_key: str,  # the batch key the degraded image goes to (the task's `simulates`)
        window: Sequence[float],  # the clean image's window (physical units -> [-1, 1])
        source_window: Sequence[float],  # the degraded image's window
        spacing_mm: Sequence[float],  # voxel size of a sample along each spatial axis (mm)
        seed: int = 0,
    ) -> None:
        self.degradation, self.key = degradation, target_key
        self.window, self.source_window = tuple(window), tuple(source_window)
        self.spacing_mm = [float(s) for s in spacing_mm]
        self.generator = torch.Generator().manual_seed(seed)  # draws the records (on the CPU: any device)

    def __call__(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The batch with `image` windowed and the task's input made from it; `generator` replaces the run's own
        (a fixed one keeps preview and validation inputs the same at every step)."""
        clean = batch["image"]
        records = self.degradation.sample(clean.shape[0], generator or self.generator, self.spacing_mm)
        try:
            degraded = self.degradation.apply(clean.float(), records, self.spacing_mm)
        except (ValueError, RuntimeError) as err:
            raise ConfigError(f"data.degrade {self.degradation.name} cannot degrade samples of shape "
                              f"{list(clean.shape[1:])}: {str(err).splitlines()[0]}") from None  # fmt: skip
        out = dict(batch)
        layout = layout_of(clean)
        out["image"] = to_unit(clean, *self.window).to(clean.dtype).contiguous(memory_format=layout)
        out[self.key] = to_unit(degraded, *self.source_window).to(clean.dtype).contiguous(memory_format=layout)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
