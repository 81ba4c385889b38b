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
