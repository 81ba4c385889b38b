"""Scans shared by the lesion tests: medgan's own CT and MR phantoms with their tissue labels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the _lesion_phantom helper beside these tests


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Two cores shared by several test runs: one torch thread avoids thread contention (and is faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _phantom(kind: str, seed: int):
    from medgan.data.phantoms import PHANTOMS, phantom_labels

    image = PHANTOMS.build(kind, seed=seed)
    labels, tissues = phantom_labels(image.meta["phantom_params"])
    return image, torch.from_numpy(labels.astype(np.int16)), tissues


@pytest.fixture(scope="session")
def ct_body():
    """(MetaTensor [1, 128, 128, 48] HU at 2 x 2 x 3 mm, int16 tissue labels, tissue names)."""
    return _phantom("ct_body", 0)


@pytest.fixture(scope="session")
def mr_brain():
    """(MetaTensor [1, 128, 128, 64] T1-like at 1.8 x 1.8 x 2.5 mm, int16 tissue labels, tissue names)."""
    return _phantom("mr_brain", 0)


@pytest.fixture(scope="session")
def inpaint_checkpoint(ct_body, tmp_path_factory) -> str:
    """A tiny 2D inpaint checkpoint (a few steps, random holes) on the CT phantom at 4 mm: learned content."""
    from medgan.config import load_config
    from medgan.io import write_image
    from medgan.tasks.checkpoint import latest_checkpoint
    from medgan.tasks.config import TrainConfig
    from medgan.training import train

    folder = tmp_path_factory.mktemp("learned")
    write_image(ct_body[0], folder / "ct.nii.gz")
    overrides = ["train.steps=3", "train.log_every_steps=3", "train.sample_every_steps=3",
                 "train.checkpoint_every_steps=3", "train.batch_size=2", "train.tensorboard=false",
                 f"data.source={folder / 'ct.nii.gz'}", "data.spacing_mm=[4.0,4.0]"]  # fmt: skip
    cfg = load_config(TrainConfig, str(Path(__file__).parents[2] / "configs" / "debug_cpu_inpaint.yaml"), overrides)
    return latest_checkpoint(train(cfg, run_dir=str(folder / "run")))
