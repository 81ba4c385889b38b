"""Scoring a translating task on held-out pairs while it trains (`data.validation`).

The held-out scans (another subject than the training scans, by the user's choice of folder or
CSV) are cut like the training samples, centred, and `count` samples spread evenly over them are
kept for the whole run; with simulated pairs their inputs are degraded once, with a fixed seed, so
every evaluation scores the same inputs. Every `train.validate_every_steps` the EMA generator runs
on them and PSNR, SSIM and MAE against the paired target are computed in physical units (HU for
CT, within the training window; the data range is the window's width), beside the same numbers for
the input itself where it is an image of the target's kind (what a do-nothing enhancer scores). The
numbers go to `stats.jsonl` and TensorBoard as `val_*`; a grid of input | output | target | error
goes to `samples/val_step_NNNNNNN.png`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from medgan.data.transforms import from_unit
from medgan.metrics.image import mae, psnr, ssim
from medgan.tasks.base import Task

__all__ = ["Validator"]


class Validator:
    def __init__(
        self,
        dataset: Any,  # a ScanDataset of the held-out scans (the task's inputs, centred crops)
        task: Task,
        record: dict[str, Any],  # the training data's record (windows)
        count: int = 32,  # samples scored, spread evenly over the held-out set
        simulate: Any = None,  # SimulatedPairs when the inputs are degraded copies
        device: torch.device | str = "cpu",
        layout: torch.memory_format = torch.contiguous_format,
        seed: int = 0,
    ) -> None:
        self.task, self.window = task, tuple(record["window"])
        n = len(dataset)
        picks = sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(min(count, n))})
        batch = default_collate([dataset[(i, seed)] for i in picks])
        batch = {k: v.to(device).contiguous(memory_format=layout) if v.ndim in (4, 5) else v.to(device)
                 for k, v in batch.items()}  # fmt: skip
        if simulate is not None:
            batch = simulate(batch, torch.Generator().manual_seed(seed), whole=True)
        self.batch = batch
        kinds = {i.key: i.kind for i in task.inputs}
        # The input to show and to score as the do-nothing baseline: the first translated image input.
        images = [key for key in task.translates or () if kinds.get(key) == "image"]
        self.input_key = images[0] if images else None
        self.input_window = task.input_window(record, self.input_key) if self.input_key else None
        self.baseline = self._baseline()  # the inputs do not change: scored once (and any size problem found now)

    def _baseline(self) -> dict[str, float]:
        target = self.batch[self.task.target].float()
        if self.input_key is None or self.batch[self.input_key].shape[1] != target.shape[1]:
            return {}
        source = from_unit(self.batch[self.input_key].float(), *self.input_window)
        return _scores("val_input", from_unit(target, *self.window), source, self.window, target.ndim - 2)

    @torch.no_grad()
    def __call__(self, generator: nn.Module, autocast: Any = None) -> tuple[dict[str, float], list[Tensor]]:
        """(the val_* numbers, the rows of the grid) for `generator` (the EMA weights)."""
        batch, task = self.batch, self.task
        target = batch[task.target].float()
        with autocast or torch.autocast("cpu", enabled=False):
            output = task.finish(generator(task.generator_input(batch, generator)), batch)
        output = output.float().clamp(-1, 1)
        dims = target.ndim - 2
        scores = _scores("val", from_unit(target, *self.window), from_unit(output, *self.window), self.window, dims)
        rows = [output, target, (output - target).abs() - 1]  # the error in [-1, 1]: black where none
        if self.input_key is not None:
            rows.insert(0, batch[self.input_key].float())
        return {**scores, **self.baseline}, rows


def _scores(prefix: str, target: Tensor, test: Tensor, window: tuple[float, float], dims: int) -> dict[str, float]:
    """Mean PSNR (dB), SSIM and MAE (physical units) over the samples; test clipped to the window as the output is."""
    test = test.clamp(*window)
    width = float(window[1] - window[0])
    reference, compared = target.flatten(0, 1), test.flatten(0, 1)  # one image per sample and channel
    return {
        f"{prefix}_psnr": float(psnr(reference, compared, width, spatial_dims=dims).mean()),
        f"{prefix}_ssim": float(ssim(reference, compared, width, spatial_dims=dims).mean()),
        f"{prefix}_mae": float(mae(reference, compared, spatial_dims=dims).mean()),
    }
