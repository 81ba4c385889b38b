"""What every part of the study shares: its config and the real slices, as the trainer sees them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "small_data_study.py"  # the command line; runs start its `stock` subcommand
DEFAULT_CONFIG = "configs/synth2d_256.yaml"


def log(message: str) -> None:
    print(f"[small_data_study] {message}", file=sys.stderr, flush=True)


def resolve_device(device: str) -> torch.device:
    """`auto` takes the GPU when there is one."""
    return torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))


def study_config(config: str, data: str, sets: list[str], seed: int | None = None):
    """The run config: `config` with the data folder, the trainer's percentile window and `sets` on top."""
    from medgan.config import load_config
    from medgan.tasks.config import TrainConfig

    base = [f"data.source={data}", "data.window=null"]
    return load_config(TrainConfig, config, [*base, *sets, *([f"seed={seed}"] if seed is not None else [])])


def real_dataset(cfg, slab_slices: int | None = None):
    """The training set exactly as the trainer builds it (same config, same code), cached in memory;
    `slab_slices` replaces the config's."""
    from medgan.tasks import TASKS
    from medgan.training import build

    update: dict[str, Any] = {"cache": "memory"}
    if slab_slices is not None:
        update["slab_slices"] = slab_slices
    return build.build_dataset(cfg.data.model_copy(update=update), TASKS.get(cfg.task), "")


def real_slices(cfg):
    """The dataset the study scores against: the trainer's slices, one per sample. A 2.5D sample is a slab
    around the slice its index names, so a slab of one slice is the slab's middle slice, cut by the
    dataset itself; the index (slice range, tissue filter) and the window are the trainer's."""
    return real_dataset(cfg, slab_slices=1)


def real_images(dataset) -> tuple[torch.Tensor, list[int]]:
    """Every sample of a `real_slices` dataset in [0, 1] (the trainer's window, first channel), and the
    scan each came from."""
    images = [dataset[(i, 0)]["image"][0] for i in range(len(dataset))]
    return (torch.stack(images).clamp(-1, 1) + 1) / 2, [scan for scan, _ in dataset.index]


def scan_names(dataset) -> list[str]:
    """The file name of each scan the dataset kept (what its index counts), in order."""
    return [Path(str(dataset.scans.data[k]["image"])).name for k in dataset.kept]
