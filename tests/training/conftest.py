"""Fixtures for the training tests: tiny configs from configs/debug_cpu_*.yaml and phantom pairs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from medgan.config import load_config
from medgan.tasks import TASKS
from medgan.tasks.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch) -> None:
    """Configs name sample data relative to the repository root, as `medgan train` run from it does."""
    monkeypatch.chdir(REPO)
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def phantom_pairs(tmp_path_factory) -> str:
    """pairs.csv with four 2D phantom CT slices, their noisy copies and tissue label maps."""
    from medgan.data.phantom_pairs import write_phantom_pairs

    return write_phantom_pairs(str(tmp_path_factory.mktemp("pairs")), count=4, spatial_dims=2)


def needs_pairs(name: str) -> bool:
    """Whether a task's debug config trains on the phantom pairs CSV: it requires a file beside each image."""
    task = TASKS.get(name) if name in TASKS else None
    return task is not None and any(i.required and i.is_file and i.key != "image" for i in task.inputs)


@pytest.fixture
def tiny_config(phantom_pairs) -> Callable[..., TrainConfig]:
    """`tiny_config("pix2pix", "train.steps=4")`: a debug CPU config with overrides (quiet, short)."""

    def make(task: str, *overrides: str) -> TrainConfig:
        extra = [f"data.source={phantom_pairs}"] if needs_pairs(task) else []
        return load_config(TrainConfig, REPO / "configs" / f"debug_cpu_{task}.yaml", [*extra, *overrides])

    return make
