"""Paired training material from phantoms: clean scans, noisy copies and tissue label maps, with a CSV."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import numpy as np

from medgan.io.image import affine_of

__all__ = ["write_phantom_pairs"]


def write_phantom_pairs(
    folder: str, count: int = 4, spatial_dims: int = 2, shape: Sequence[int] | None = None,
    spacing_mm: Sequence[float] | None = None, kind: str = "ct_body", seed: int = 0,
) -> str:  # fmt: skip
    """Write `count` phantoms with their tissue label maps and a low-dose-like noisy copy as
    paired data, plus `pairs.csv` (columns image, source, label_map); returns the CSV path.

    Material for pix2pix and label-map-to-image runs when no paired scans are at hand.
    """
    from medgan.data.phantoms import PHANTOMS, phantom_labels
    from medgan.io import write_image
    from medgan.io.image import make_image

    os.makedirs(folder, exist_ok=True)
    rows = []
    for n in range(count):
        kwargs = {"spatial_dims": spatial_dims, "seed": seed + n, "shape": shape, "spacing_mm": spacing_mm}
        clean = PHANTOMS.build(kind, **kwargs)
        noisy = PHANTOMS.build(kind, **kwargs, noise_sd=4 * clean.meta["phantom_params"]["noise_sd"] + 20)
        labels, _ = phantom_labels(clean.meta["phantom_params"])
        label_map = make_image(labels[np.newaxis].astype(np.int16), affine_of(clean), {"modality": ""})
        names = {"image": f"image_{n:03d}.nii.gz", "source": f"noisy_{n:03d}.nii.gz",
                 "label_map": f"labels_{n:03d}.nii.gz"}  # fmt: skip
        for key, image in (("image", clean), ("source", noisy), ("label_map", label_map)):
            write_image(image, os.path.join(folder, names[key]), overwrite=True)
        rows.append(names)
    path = os.path.join(folder, "pairs.csv")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "source", "label_map"])
        writer.writeheader()
        writer.writerows(rows)
    return path
