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
        patch_size: Sequence[int] | None = None,  # cut each pair to this size at a random tissue voxel; None: whole
        patches_per_sample: int = 1,  # patches cut from each degraded sample: one simulation feeds several
    ) -> None:
        self.patches_per_sample = patches_per_sample
        self.patch_size = list(patch_size) if patch_size else None
        self.degradation, self.key = degradation, target_key
        self.window, self.source_window = tuple(window), tuple(source_window)
        self.spacing_mm = [float(s) for s in spacing_mm]
        self.generator = torch.Generator().manual_seed(seed)  # draws the records (on the CPU: any device)

    def __call__(self, batch: dict[str, Tensor], generator: torch.Generator | None = None,
                 whole: bool = False) -> dict[str, Tensor]:  # fmt: skip
        """The batch with `image` windowed and the task's input made from it, cut to `patch_size` unless `whole`;
        `generator` replaces the run's own (a fixed one keeps preview and validation inputs the same every time)."""
        clean = batch["image"]
        generator = generator or self.generator
        records = self.degradation.sample(clean.shape[0], generator, self.spacing_mm)
        try:
            degraded = self.degradation.apply(clean.float(), records, self.spacing_mm)
        except (ValueError, RuntimeError) as err:
            raise ConfigError(f"data.degrade {self.degradation.name} cannot degrade samples of shape "
                              f"{list(clean.shape[1:])}: {str(err).splitlines()[0]}") from None  # fmt: skip
        out = dict(batch)
        if self.patch_size and not whole:
            clean, degraded = self._patches(clean, degraded, generator)
            count = self.patches_per_sample  # every other per-sample value repeated for each of its patches
            out = {k: v.repeat_interleave(count, dim=0) for k, v in batch.items() if k not in ("image", self.key)}
        layout = layout_of(batch["image"])
        out["image"] = to_unit(clean, *self.window).to(clean.dtype).contiguous(memory_format=layout)
        out[self.key] = to_unit(degraded, *self.source_window).to(clean.dtype).contiguous(memory_format=layout)
        return out

    @property
    def per_sample(self) -> int:
        """Training images made from each sample of the loader (its patches)."""
        return self.patches_per_sample if self.patch_size else 1

    def _patches(self, clean: Tensor, degraded: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The same patch of both images per sample, centred on a random tissue voxel (above 5% of the window)
        and moved inside the sample; anywhere when a sample has no tissue."""
        level = self.window[0] + 0.05 * (self.window[1] - self.window[0])
        size = self.patch_size
        cut_clean, cut_degraded = [], []
        for item in range(clean.shape[0]):
            tissue = (clean[item] > level).any(0).nonzero()
            for _ in range(self.patches_per_sample):
                if len(tissue):
                    centre = tissue[int(torch.randint(len(tissue), (), generator=generator))].tolist()
                else:
                    centre = [int(torch.randint(n, (), generator=generator)) for n in clean.shape[2:]]
                starts = [min(max(c - p // 2, 0), n - p) for c, p, n in zip(centre, size, clean.shape[2:], strict=True)]
                where = (slice(None), *[slice(s, s + p) for s, p in zip(starts, size, strict=True)])
                cut_clean.append(clean[item][where])
                cut_degraded.append(degraded[item][where])
        return torch.stack(cut_clean), torch.stack(cut_degraded)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
