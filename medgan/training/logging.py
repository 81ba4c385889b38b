"""What a run reports: `stats.jsonl`, `sessions.jsonl`, TensorBoard events, sample grids and a progress line.

Only rank 0 writes or prints. Losses are accumulated on the device and read once per log
interval, so logging never stalls the GPU between steps; the same read checks that no loss
has become NaN or infinite (and names the first step where one did).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

import medgan
from medgan.errors import MedganError
from medgan.io.png import encode_png, to_uint8
from medgan.training.events import EventWriter

__all__ = ["RunLogger", "Stats", "TrainingDiverged", "record_session", "sample_grid"]
log = logging.getLogger(__name__)


class TrainingDiverged(MedganError):
    """A loss became NaN or infinite: the run stops before writing another checkpoint."""


class Stats:
    """Running means of named scalars on the device, with the first step each went non-finite.

    A step's values are stacked into one vector, so accumulating them is a handful of device
    operations whatever their number (a GPU launches five small kernels a step, not five per value).
    Steps that report different names (lazy R1 every few steps) accumulate in separate groups.
    """

    def __init__(self) -> None:
        self._groups: dict[tuple[str, ...], list] = {}  # names -> [sums, count, first bad step]

    def add(self, step: int, values: dict[str, Tensor]) -> None:
        names = tuple(values)
        vector = torch.stack([values[name].detach().float().reshape(()) for name in names])
        bad_at = torch.where(torch.isfinite(vector), math.inf, float(step))
        group = self._groups.get(names)
        if group is None:
            self._groups[names] = [vector.clone(), 1, bad_at]
        else:
            group[0] += vector
            group[1] += 1
            group[2] = torch.minimum(group[2], bad_at)

    def check_finite(self) -> None:
        """Raise `TrainingDiverged` if any value was NaN/Inf since the last `means()`."""
        if not self._groups:
            return
        names = [name for group in self._groups for name in group]
        first = torch.cat([group[2] for group in self._groups.values()]).tolist()
        bad = [(step, name) for step, name in zip(first, names, strict=True) if math.isfinite(step)]
        if bad:
            step, name = min(bad)
            raise TrainingDiverged(
                f"{name} became NaN or infinite at step {int(step)}; no checkpoint was written after it. "
                "Lower optim.g_lr/optim.d_lr, set optim.grad_clip_norm, or use train.precision=fp32, "
                "then resume from the last checkpoint (--resume)"
            )

    def means(self) -> dict[str, float]:
        """Means since the last call (one device read), then reset."""
        if not self._groups:
            return {}
        sums = torch.cat([group[0] for group in self._groups.values()]).tolist()
        names = [name for group in self._groups for name in group]
        counts = [group[1] for key, group in self._groups.items() for _ in key]
        total: dict[str, list[float]] = {}
        for name, value, count in zip(names, sums, counts, strict=True):
            entry = total.setdefault(name, [0.0, 0])
            entry[0] += value
            entry[1] += count
        self._groups = {}
        return {name: value / count for name, (value, count) in total.items()}


def _planes(volume: np.ndarray) -> list[np.ndarray]:
    """Middle slices of an (i, j, k) volume in the three planes, rotated so k (superior) is up."""
    i, j, k = volume.shape
    return [np.rot90(volume[:, :, k // 2]), np.rot90(volume[:, j // 2, :]), np.rot90(volume[i // 2, :, :])]


def sample_grid(rows: Sequence[Tensor], columns: int) -> np.ndarray:
    """An 8-bit grid of normalized images ([-1, 1]): one row per tensor, one column per sample.

    2D tiles show the middle channel; 3D tiles show the middle axial, coronal and sagittal slices.
    Tiles smaller than 64 pixels are enlarged (nearest neighbour) so that they can be seen.
    """
    tiles_by_row = []
    for batch in rows:
        batch = batch.detach().float().cpu()[:columns]
        tiles = []
        for sample in batch:
            image = sample[sample.shape[0] // 2].numpy()
            planes = [np.rot90(image)] if image.ndim == 2 else _planes(image)
            height = max(p.shape[0] for p in planes)
            planes = [np.pad(p, ((0, height - p.shape[0]), (0, 1)), constant_values=-1.0) for p in planes]
            tiles.append(np.concatenate(planes, axis=1))
        tiles_by_row.append(tiles)
    tile_h = max(t.shape[0] for row in tiles_by_row for t in row)
    tile_w = max(t.shape[1] for row in tiles_by_row for t in row)
    grid = np.full((len(rows) * (tile_h + 1), columns * (tile_w + 1)), -1.0)
    for r, tiles in enumerate(tiles_by_row):
        for c, tile in enumerate(tiles):
            y, x = r * (tile_h + 1), c * (tile_w + 1)
            grid[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    zoom = max(1, 64 // tile_h)
    return to_uint8(grid.repeat(zoom, axis=0).repeat(zoom, axis=1), -1.0, 1.0)


class RunLogger:
    """Rank 0's reporter; on other ranks every method does nothing."""

    def __init__(self, run_dir: str, enabled: bool, total_steps: int, start_step: int, images_per_step: int,
                 tensorboard: bool = True):  # fmt: skip
        self.run_dir, self.enabled, self.total_steps = run_dir, enabled, total_steps
        self.images_per_step = images_per_step
        self._events = EventWriter(run_dir) if enabled and tensorboard else None
        self._last_time, self._last_step, self._start_time = time.perf_counter(), start_step, time.perf_counter()
        self._stats_path = os.path.join(run_dir, "stats.jsonl")
        self._tty = sys.stderr.isatty()

    def log(self, step: int, losses: dict[str, float], extra: dict[str, float]) -> dict:
        """Record the interval ending after `step` steps; returns the record written.

        samples_per_s counts images of all processes together.
        """
        now = time.perf_counter()
        steps_per_s = (step - self._last_step) / max(now - self._last_time, 1e-9)
        record = {"step": step, "images_seen": step * self.images_per_step, **losses, **extra,
                  "samples_per_s": steps_per_s * self.images_per_step, "time_s": now - self._start_time}  # fmt: skip
        self._last_time, self._last_step = now, step
        if not self.enabled:
            return record
        with open(self._stats_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._events is not None:
            self._events.scalars(step, {k: v for k, v in record.items() if k not in ("step", "time_s")})
            self._events.flush()
        self._progress(step, record)
        return record

    def _progress(self, step: int, record: dict) -> None:
        rate = record["samples_per_s"]
        eta_s = (self.total_steps - step) * self.images_per_step / max(rate, 1e-9)
        done = int(20 * step / self.total_steps)
        losses = " ".join(f"{k}={v:.4g}" for k, v in record.items() if k.startswith("loss"))
        line = (f"[{'#' * done}{'.' * (20 - done)}] step {step}/{self.total_steps} {losses} | "
                f"{rate:.1f} samples/s | ETA {_duration(eta_s)}")  # fmt: skip
        # A terminal gets one line rewritten in place; a log file gets a line per interval.
        print(("\r\033[K" + line) if self._tty else line, end="" if self._tty else "\n", file=sys.stderr, flush=True)

    def samples(self, step: int, rows: Sequence[Tensor], columns: int, name: str = "samples") -> str | None:
        """Write `samples/step_NNNNNNN.png` (`val_step_...` for another `name`) and the same grid to TensorBoard
        under `name`; returns its path."""
        if not self.enabled:
            return None
        grid = sample_grid(rows, columns)
        png = encode_png(grid)
        prefix = "" if name == "samples" else "val_"
        path = os.path.join(self.run_dir, "samples", f"{prefix}step_{step:07d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(png)
        if self._events is not None:
            self._events.image(step, name, png, *grid.shape)
            self._events.flush()
        return path

    def validation(self, step: int, scores: dict[str, float], rows: Sequence[Tensor], columns: int) -> None:
        """Held-out scores: a `stats.jsonl` line of their own, TensorBoard scalars, a line on stderr and the
        input | output | target | error grid."""
        if not self.enabled:
            return
        record = {"step": step, "images_seen": step * self.images_per_step, **scores}
        with open(self._stats_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._events is not None:
            self._events.scalars(step, scores)
        shown = " ".join(f"{k}={v:.4g}" for k, v in scores.items())
        print(("\r\033[K" if self._tty else "") + f"validation at step {step}: {shown}", file=sys.stderr, flush=True)
        self.samples(step, rows, columns, name="validation")

    def close(self) -> None:
        if self.enabled and self._tty:
            print(file=sys.stderr)
        if self._events is not None:
            self._events.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def record_session(run_dir: str, step: int, device: torch.device, precision: str, channels_last: bool,
                   compiled: bool, processes: int) -> None:  # fmt: skip
    """One line in sessions.jsonl per start or resume: what this stretch of the run trained on and how. A resumed
    run may have moved to another machine, where `auto` resolves differently (bf16 on one CPU, fp32 on another)."""
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{_cpu_name()} ({torch.backends.cpu.get_cpu_capability()})"
    session = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "step": step,
               "device": str(device), "hardware": hardware, "precision": precision, "channels_last": channels_last,
               "compile": compiled, "processes": processes, "threads": torch.get_num_threads(),
               "torch": torch.__version__, "medgan": medgan.__version__}  # fmt: skip
    log.info("training from step %d on %s (%s) in %s", step, device, hardware, precision)
    with open(os.path.join(run_dir, "sessions.jsonl"), "a") as fh:
        fh.write(json.dumps(session) + "\n")


def _cpu_name() -> str:
    """The CPU's model name where the system says it (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
