"""The one image type in flight: a MONAI MetaTensor `[C, *spatial]` with a RAS affine."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medgan.io.geometry import full_affine

__all__ = ["affine_of", "make_image", "meta_of"]


def make_image(array: np.ndarray, affine_ras: np.ndarray, meta: dict[str, Any]) -> MetaTensor:
    """Wrap a channel-first array and its RAS affine; `meta` records where it came from.

    MONAI's own keys are filled so MONAI transforms and `SaveImage` understand the result:
    `affine`/`original_affine` (RAS), `spatial_shape`, `original_channel_dim` and `space`.
    """
    array = np.ascontiguousarray(array)
    if not array.dtype.isnative:  # big-endian files: torch only takes native byte order
        array = array.astype(array.dtype.newbyteorder("="))
    affine = torch.as_tensor(np.asarray(affine_ras, dtype=np.float64))
    full_meta = {
        "original_affine": affine.clone(),
        "spatial_shape": np.asarray(array.shape[1:]),
        "original_channel_dim": 0 if array.shape[0] > 1 else "no_channel",
        "space": "RAS",
        **meta,
    }
    return MetaTensor(torch.from_numpy(array), affine=affine, meta=full_meta)


def affine_of(image: Any) -> np.ndarray:
    """The 4x4 RAS affine of a MetaTensor (identity for a plain tensor or array)."""
    affine = getattr(image, "affine", None)
    if affine is None:
        return np.eye(4)
    affine = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    return full_affine(affine, 2) if affine.shape == (3, 3) else affine  # a 2D MONAI affine, lifted into 3D


def meta_of(image: Any) -> dict[str, Any]:
    return dict(getattr(image, "meta", {}) or {})


def array_of(image: Any) -> np.ndarray:
    """The voxels of a MetaTensor, tensor or array as numpy (half precision widened to float32)."""
    data = image.detach().cpu() if isinstance(image, torch.Tensor) else image
    if isinstance(data, MetaTensor):
        data = data.as_tensor()
    if isinstance(data, torch.Tensor):
        if data.dtype in (torch.bfloat16, torch.float16):
            data = data.float()
        return data.numpy()
    return np.asarray(data)
