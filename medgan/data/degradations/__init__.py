"""Physics-based degradations that turn clean scans into (clean, degraded) training pairs.

Each degradation is registered by a short name in `DEGRADATIONS` and built with its settings:

    from medgan.data.degradations import DEGRADATIONS
    lowdose = DEGRADATIONS.build("ct-lowdose", dose=0.25)            # or severity=0.7, or dose=(0.1, 0.5)
    records = lowdose.sample(batch=4, generator=0, spacing_mm=(0.7, 0.7))
    noisy = lowdose.apply(ct_batch_hu, records, spacing_mm=(0.7, 0.7))  # [B, C, *spatial], same device

`sample` draws a small JSON-able record per batch item (every parameter and a noise seed);
`apply` is deterministic given the records, so a record replays exactly. `degrade_image` does
both for one MetaTensor and returns the degraded image with its geometry updated.

Kinds: ct-lowdose (`ct.py`); mr-undersample, mr-noise, mr-gibbs, mr-motion, mr-bias (`mr.py`,
`mr_fields.py`); thick-slices, downsample (`resolution.py`). Physics and parameters: docs/enhancement.md.
"""

from __future__ import annotations

from medgan.data.degradations import ct, mr, mr_fields, resolution  # noqa: F401  (they register themselves)
from medgan.data.degradations.base import Degradation, Param
from medgan.data.degradations.registry import DEGRADATIONS
from medgan.data.degradations.scan import degrade_image

__all__ = ["DEGRADATIONS", "Degradation", "Param", "degrade_image"]
