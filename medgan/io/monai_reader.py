"""medgan's readers as a MONAI `ImageReader`, so MONAI pipelines load through them.

    from monai.transforms import LoadImage
    from medgan.io.monai_reader import MedganReader

    load = LoadImage(reader=MedganReader(), image_only=True, ensure_channel_first=True)
    ct = load("scans/chest/")   # a DICOM folder; also .nii(.gz), .nrrd, .mha, a DICOMDIR

The data and affine are exactly those of `medgan.io.read_image` (RAS, HU for CT); MONAI's
`LoadImage` then applies its own `dtype` (float32 by default).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.data.image_reader import ImageReader
from monai.utils import ensure_tuple

from medgan.errors import InputError
from medgan.io import format_of, read_image
from medgan.io.image import affine_of, array_of

__all__ = ["MedganReader"]

_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", "")


class MedganReader(ImageReader):
    """Read DICOM (file, folder, DICOMDIR), NIfTI, NRRD and MHA with exact geometry.

    Args:
        series: SeriesInstanceUID (or `UID:n` key) to read from a folder holding several.
        allow_gaps: interpolate across missing slices instead of failing.
        skip_invalid: skip unreadable or non-DICOM files inside a folder.
    """

    def __init__(self, series: str | None = None, allow_gaps: bool = False, skip_invalid: bool = False):
        super().__init__()
        self.series = series
        self.allow_gaps = allow_gaps
        self.skip_invalid = skip_invalid

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        for name in ensure_tuple(filename):
            name = os.fspath(name)
            if os.path.isdir(name) or format_of(name) != "dicom":
                continue
            base = os.path.basename(name).lower()
            if base == "dicomdir" or os.path.splitext(base)[1] in _DICOM_SUFFIXES:
                continue
            return False
        return True

    def read(self, data: Sequence[os.PathLike | str] | os.PathLike | str, **kwargs: Any):
        images = [
            read_image(os.fspath(name), series=self.series, allow_gaps=self.allow_gaps, skip_invalid=self.skip_invalid)
            for name in ensure_tuple(data)
        ]
        return images[0] if len(images) == 1 else images

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        """Channel-last array (MONAI's reader convention) and its metadata; several images become channels."""
        images = list(img) if isinstance(img, list | tuple) else [img]
        arrays = [array_of(image) for image in images]
        affine = affine_of(images[0])
        for other in images[1:]:
            if other.shape[1:] != images[0].shape[1:] or not np.allclose(affine_of(other), affine, atol=1e-4):
                raise InputError(
                    "images loaded together must share shape and geometry",
                    path=str(other.meta.get("filename_or_obj", "")),
                )
        channels = np.concatenate(arrays, axis=0)
        meta = {k: v for k, v in dict(images[0].meta).items() if k not in ("affine", "original_affine")}
        meta.update(
            affine=affine.copy(),
            original_affine=affine.copy(),
            spatial_shape=np.asarray(channels.shape[1:]),
            space="RAS",
        )
        if channels.shape[0] == 1:
            meta["original_channel_dim"] = "no_channel"
            return channels[0], meta
        meta["original_channel_dim"] = -1
        return np.moveaxis(channels, 0, -1), meta
