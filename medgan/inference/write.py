"""Writing what a generator made: file names, modality and units, the voxel grid, and the file itself.

Outputs are NIfTI (with a JSON sidecar naming modality and units), a DICOM series per scan (marked
SyntheticData or DERIVED by `medgan.io.write_image`) or an 8-bit PNG preview of the middle slice.
Every output name is checked before anything is written, so a folder never mixes two runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from medgan.errors import OutputError

__all__ = ["FORMATS", "SUFFIX", "check_outputs", "drawn_affine", "output_kind", "write_output"]

FORMATS = ("nifti", "dicom", "png")
SUFFIX = {"nifti": ".nii.gz", "dicom": "", "png": ".png"}  # what write_output adds to each output's stem


def check_outputs(paths: Sequence[str], out_dir: str, overwrite: bool) -> None:
    """Refuse, before anything is written, outputs that exist (unless `overwrite`), then create `out_dir`."""
    existing = [p for p in paths if os.path.lexists(p)]
    if existing and not overwrite:
        raise OutputError(f"{len(existing)} of the {len(paths)} outputs already exist (the first: "
                          f"{os.path.basename(existing[0])}); pass --overwrite or choose another --out",
                          path=out_dir)  # fmt: skip
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the folder ({err.strerror or err})", path=out_dir) from None


def output_kind(made: Mapping[str, Any], label: int | None, modality: str | None, format: str,
                checkpoint: str) -> tuple[str, str]:  # fmt: skip
    """(modality, units) of one output: its class's (conditional checkpoints record them per class),
    else the training data's; `modality` (--modality) overrides. Checked before anything is made."""
    per_class = made.get("class_kinds") or []
    if label is not None and per_class and not 0 <= label < len(per_class):
        return "", ""  # no such class: drawing refuses it, naming the classes there are
    if label is not None and per_class:
        kinds, where = [tuple(k) for k in per_class[label]], f"class {label}"
    elif made.get("modality") or len(made.get("modalities") or []) <= 1:
        kinds, where = [(made.get("modality") or "", made.get("units") or "")], "the training data"
    else:  # scans of several modalities, not told apart by class
        kinds, where = [(m, "") for m in made["modalities"]], "the training data"
    if modality:
        wanted = modality.upper()
        units = [u for m, u in kinds if m == wanted]
        return wanted, units[0] if units else ("HU" if wanted == "CT" else "")
    names = sorted({m or "?" for m, _ in kinds})
    if len(names) == 1:  # one modality (its units may be spelled differently by different files)
        kind = (kinds[0][0] or "").upper(), kinds[0][1]
        if format == "dicom" and kind[0] not in ("CT", "MR"):
            raise OutputError(f"DICOM output needs the modality CT or MR; {where} recorded "
                              f"{kind[0] or 'none'}: pass --modality CT or MR", path=checkpoint)  # fmt: skip
        return kind
    if format == "dicom" and len(names) > 1:
        raise OutputError(f"{where} mixes {' and '.join(names)} scans, so DICOM "
                          "output cannot tell which modality to write: pass --modality CT or MR",
                          path=checkpoint)  # fmt: skip
    if format == "dicom" and not kinds:
        raise OutputError(f"{where} had no training scans, so no modality was recorded for it: pass --modality CT "
                          "or MR", path=checkpoint)  # fmt: skip
    return "", ""


def drawn_affine(record: Mapping[str, Any], shape: Sequence[int], label: int | None = None) -> np.ndarray:
    """The voxel grid of a scan drawn from noise: the training data's orientation and spacing (its class's,
    when the checkpoint records one per class), the field of view (of `shape`) centred on the origin."""
    grids = record.get("class_grids") or []
    grid = grids[label] if label is not None and 0 <= label < len(grids) and grids[label] else record
    directions = np.asarray(grid["directions"], dtype=np.float64)  # 3x3, columns: the source's array axes
    affine = np.eye(4)
    axes = record["axes"]
    for column, axis in enumerate(axes):
        affine[:3, column] = directions[:, axis] * grid["spacing_mm"][column]
    if len(axes) == 2:  # a 2D image from 3D scans: the third column is the slice axis
        affine[:3, 2] = directions[:, record["slice_axis"]] * (grid.get("slice_spacing_mm") or 1.0)
    centre = (np.asarray(list(shape)[:3] + [1] * (3 - len(shape)), dtype=np.float64) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def write_output(image: Tensor, affine: np.ndarray, meta: Mapping[str, Any], path_stem: str, format: str,
                 window: Sequence[float], overwrite: bool) -> str:  # fmt: skip
    """Write `image` (`[C, *spatial]`, physical units) as `path_stem` + SUFFIX[format]; returns the path.
    `window` sets a PNG's grey levels; DICOM needs `meta["modality"]` CT or MR."""
    from medgan.io import write_image
    from medgan.io.image import make_image
    from medgan.io.png import to_uint8, write_png

    array = image.numpy().astype(np.float32)
    path = path_stem + SUFFIX[format]
    if format == "png":
        low, high = window
        plane = array[array.shape[0] // 2]
        if plane.ndim == 3:  # a volume: its middle axial slice
            plane = plane[:, :, plane.shape[2] // 2]
        return write_png(to_uint8(np.rot90(plane), low, high), path, overwrite)
    scan = make_image(array, affine, dict(meta))
    if format == "nifti":
        return write_image(scan, path, overwrite=overwrite)
    if meta["modality"] not in ("CT", "MR"):
        raise OutputError("DICOM output needs the modality CT or MR; the training data recorded none: "
                          "pass --modality CT or MR", path=os.path.dirname(path))  # fmt: skip
    return write_image(scan, path, to="dicom", modality=meta["modality"], synthetic=bool(meta.get("synthetic")),
                       overwrite=overwrite)  # fmt: skip
