"""Wiring a config into the parts the loop uses: run folder, data, augmentation, loader, optimizers.

Each function checks what it can up front, so a bad config fails in seconds with one line (an
empty data folder, a column the task needs) rather than minutes into a run. The networks come from
`medgan.tasks.networks`, the one recipe training and inference share.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from medgan.errors import ConfigError, InputError, OutputError
from medgan.tasks.base import Task
from medgan.tasks.checkpoint import latest_checkpoint
from medgan.tasks.config import DataConfig, OptimConfig, TrainConfig, build_degradation
from medgan.training.augment import Augment
from medgan.training.distributed import Dist
from medgan.training.pairs import SimulatedPairs
from medgan.training.validation import Validator

__all__ = [
    "build_dataset",
    "check_creatable",
    "make_augment",
    "make_loader",
    "make_optimizer",
    "make_simulator",
    "make_validator",
    "resolve_run_dir",
    "to_device",
]


def resolve_run_dir(run_dir: str | None, resume: bool, name: str, root: str = "runs") -> str:
    """The run folder: given, or `runs/<name>-NNNNN` (the next number; the newest one to resume)."""
    if run_dir is None:
        pattern = re.compile(rf"^{re.escape(name)}-(\d{{5}})$")
        numbers = sorted(int(m.group(1)) for d in _listdir(root) if (m := pattern.match(d)))
        if resume:
            resumable = [n for n in numbers if latest_checkpoint(os.path.join(root, f"{name}-{n:05d}"))]
            if not resumable:
                raise InputError(f"no run of {name!r} with a checkpoint to resume; pass --run-dir", path=root)
            return os.path.join(root, f"{name}-{resumable[-1]:05d}")
        return os.path.join(root, f"{name}-{(numbers[-1] + 1) if numbers else 0:05d}")
    has_checkpoint = latest_checkpoint(run_dir) is not None
    if resume and not has_checkpoint:
        raise InputError("no checkpoint here to resume from; drop --resume to start a new run", path=run_dir)
    if not resume and has_checkpoint:
        raise InputError("this run folder already holds checkpoints; pass --resume, or choose another --run-dir",
                         path=run_dir)  # fmt: skip
    check_creatable(run_dir, "--run-dir")
    return run_dir


def check_creatable(folder: str, what: str) -> None:
    """Refuse, before any work, a folder that cannot be made: it, or its nearest existing ancestor, is a
    file, or that ancestor cannot be written to."""
    path = os.path.abspath(folder)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        where = "is a file" if path == os.path.abspath(folder) else f"lies under a file ({path})"
        raise OutputError(f"{where}, not a folder; choose another {what}", path=folder)
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"cannot be created or written: {path} is not writable; choose another {what}",
                          path=folder)  # fmt: skip


def _listdir(folder: str) -> list[str]:
    return os.listdir(folder) if os.path.isdir(folder) else []


def build_dataset(data: DataConfig, task: Task, cache_dir: str, source: str | None = None, crop: str | None = None):
    """The training set of a task: a `ScanDataset` of the inputs it declares, or, for a task with two
    domains, an `UnpairedDataset` of `data.source` and `data.source_b`. With `data.degrade`, the input the
    task simulates is not read but made on the device (`SimulatedPairs`), and the images stay in physical
    units. `source` and `crop` replace `data.source` and `data.crop` (the held-out set of `data.validation`)."""
    from medgan.data.datasets import ScanDataset, UnpairedDataset
    from medgan.data.records import find_records

    source = source or data.source
    inputs = task.inputs
    if data.degrade is not None:
        inputs = tuple(i for i in task.inputs if i.key != task.simulates)
    records = find_records(source, inputs)
    if data.degrade is not None and source.lower().endswith(".csv"):
        given = find_records(source, task.inputs)
        if any(task.simulates in r for r in given):
            raise InputError(f"data.degrade makes the {task.simulates!r} images, but the CSV names them too: drop the "
                             "column or data.degrade", path=source)  # fmt: skip
    _check_columns(records, task, source, inputs)
    options = {
        "spatial_dims": data.spatial_dims, "image_size": data.image_size, "spacing_mm": data.spacing_mm,
        "slice_axis": data.slice_axis, "slab_slices": data.slab_slices, "slice_range": data.slice_range,
        "min_foreground_fraction": data.min_foreground_fraction, "window_percentiles": data.window_percentiles,
        "crop": crop or data.crop, "cache": data.cache,
    }  # fmt: skip
    dataset = ScanDataset(records, inputs, window=data.window, source_window=data.source_window,
                          cache_dir=os.path.join(cache_dir, "a"), physical=("image",) if data.degrade else (),
                          **options)  # fmt: skip
    if data.degrade is not None:  # the degraded input's window: given, or the clean image's
        dataset.record["source_window"] = list(data.source_window or dataset.record["window"])
    if not task.domains:
        return dataset
    if not data.source_b:
        raise ConfigError(f"task {task.name} needs data.source_b: a folder or CSV of the second domain")
    other = ScanDataset(find_records(data.source_b, task.inputs), task.inputs, window=data.source_window,
                        cache_dir=os.path.join(cache_dir, "b"), **options)  # fmt: skip
    return UnpairedDataset(dataset, other, task.domains)


def _check_columns(records: list[dict[str, Any]], task: Task, source: str, inputs) -> None:
    """Every record holds the task's required inputs; an optional one is given for every record or none
    (a batch cannot mix samples with and without it)."""
    for item in inputs:
        given = [item.key in r for r in records]
        if item.required and not all(given):
            raise InputError(f"task {task.name} needs a CSV with a {item.key!r} column for every row", path=source)
        if not item.required and any(given) and not all(given):
            line = next(r.get("csv_line", "?") for r, has in zip(records, given, strict=True) if not has)
            raise InputError(f"line {line} lacks {item.key!r}, which other rows give: task {task.name} takes it "
                             "for every row or none", path=source)  # fmt: skip


def make_simulator(cfg: TrainConfig, task: Task, record: dict[str, Any], seed: int) -> SimulatedPairs | None:
    """Simulated pairs for `data.degrade` (None without it)."""
    if cfg.data.degrade is None:
        return None
    degradation = build_degradation(cfg.data.degrade)
    return SimulatedPairs(degradation, task.simulates, record["window"], record["source_window"],
                          record["spacing_mm"], seed=seed, patch_size=cfg.data.degrade.patch_size,
                          patches_per_sample=cfg.data.degrade.patches_per_sample)  # fmt: skip


def make_validator(cfg: TrainConfig, task: Task, record: dict[str, Any], cache_dir: str,
                   simulate: SimulatedPairs | None, device: torch.device, layout) -> Validator | None:  # fmt: skip
    """The held-out pairs of `data.validation`, cut like the training samples but centred, in the training
    windows (None without it)."""
    if cfg.data.validation is None:
        return None
    data = cfg.data.model_copy(update={"window": record["window"], "source_window": record.get("source_window"),
                                       "degrade": cfg.data.degrade})  # fmt: skip
    held_out = build_dataset(data, task, os.path.join(cache_dir, "validation"), source=cfg.data.validation,
                             crop="center")  # fmt: skip
    return Validator(held_out, task, record, cfg.data.validation_samples, simulate, device, layout, seed=cfg.seed)


def make_augment(cfg: TrainConfig, record: dict[str, Any], seed: int, device: torch.device) -> Augment:
    """The discriminator's augmentation (DiffAugment, with ADA when `augment.ada_target` is set)."""
    a = cfg.augment
    return Augment(
        cfg.data.spatial_dims, a.ops, a.p, list(record["spacing_mm"]), ada_target=a.ada_target,
        ada_speed_images=a.ada_speed_images, translate_fraction=a.translate_fraction, scale_log2_sd=a.scale_log2_sd,
        cutout_fraction=a.cutout_fraction, brightness_sd=a.brightness_sd, contrast_log2_sd=a.contrast_log2_sd,
        seed=seed, device=device,
    )  # fmt: skip


def make_loader(dataset: Any, cfg: TrainConfig, dist: Dist, start_step: int, device: torch.device) -> DataLoader:
    """The data stream: batch k depends only on (seed, k), so a resumed run continues it exactly."""
    from medgan.data.sampling import StepBatchSampler

    sampler = StepBatchSampler(len(dataset), cfg.train.batch_size, cfg.seed, dist.rank, dist.world_size, start_step)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.data.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),  # its own seed: the global RNG stays put
    )


def make_optimizer(params: list[nn.Parameter], lr: float, optim: OptimConfig, device: torch.device):
    """Adam(W); 'auto' uses the fused kernels on CUDA and CPU (one kernel over all tensors, the fastest there)."""
    fused = optim.fused is True or (optim.fused == "auto" and device.type in ("cuda", "cpu"))
    cls = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, betas=optim.betas, weight_decay=optim.weight_decay, fused=fused or None)


def to_device(batch: dict[str, torch.Tensor], device: torch.device, layout: torch.memory_format) -> dict:
    """Move a batch to the device; images take the networks' memory layout (channels-last or not)."""
    out = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True)
        if value.is_floating_point() and value.ndim in (4, 5):
            value = value.contiguous(memory_format=layout)
        out[key] = value
    return out
