"""Shared by the DICOM writer and de-identification tests: external validators, small images and geometries."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import external
import numpy as np
import pydicom
from external import rotation

from medgan.io.image import make_image

# dicom3tools (the 2022 Debian build and the 2024 release) predates SyntheticData (0008,001C),
# added to the standard in 2023; this one error is expected and is the only one tolerated.
SYNTHETIC_DATA_ERROR = (
    "Error - Attribute with an even group number is not a recognized standard attribute - (0x0008,0x001c)"
)
UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")  # PS3.5 9.1: digits, dots, no leading zeros


def external_tool(name: str) -> str:
    """Path of a Debian tool; skip without it, or fail when MEDGAN_REQUIRE_EXTERNAL=1 (CI)."""
    return external.external_tool(name, {"dciodvfy": "dicom3tools"}.get(name))


@dataclass
class Verdict:
    """What dciodvfy said about one file."""

    iod: str  # the IOD it validated against, e.g. "CTImage"
    errors: list[str]  # every error line except the known SyntheticData one
    warnings: list[str]
    lines: list[str]


def dciodvfy(path: str | os.PathLike) -> Verdict:
    """Run dciodvfy on one file (it exits 0 either way, so the verdict is parsed from its text)."""
    tool = external_tool("dciodvfy")
    result = subprocess.run([tool, os.fspath(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = [line.rstrip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line and not line.startswith(SYNTHETIC_DATA_ERROR)]
    warnings = [line for line in lines if "Warning" in line]
    iods = [line for line in lines if re.fullmatch(r"[A-Za-z0-9]+", line)]
    return Verdict(iods[0] if iods else "", errors, warnings, lines)


def files_in(folder: str | os.PathLike) -> list[str]:
    return sorted(os.path.join(folder, name) for name in os.listdir(folder))


def read_all(folder: str | os.PathLike) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path) for path in files_in(folder)]


def affine(spacing_mm=(0.7, 0.8, 2.5), origin_mm=(90.0, 80.0, -40.0), rotate=None, tilt_deg=0.0) -> np.ndarray:
    """RAS affine: axes scaled by spacing, rotated, and the slice step tilted about the first axis."""
    rotate = np.eye(3) if rotate is None else rotate
    columns = np.diag(spacing_mm).astype(float)
    columns[1, 2] = spacing_mm[2] * np.tan(np.radians(tilt_deg))  # step leans along the second axis
    out = np.eye(4)
    out[:3, :3] = rotate @ columns
    out[:3, 3] = origin_mm
    return out


GEOMETRIES = {
    "axial": affine(spacing_mm=(-0.7, -0.8, 2.5)),  # LPS-like, as a scanner writes it
    "ras": affine(),
    "oblique": affine(origin_mm=(-1234.5, 2345.6, -345.7), rotate=rotation(0, 20) @ rotation(2, 20)),
    "tilted": affine(spacing_mm=(-0.7, -0.8, 2.5), tilt_deg=15.0),
}


def ct_volume(shape=(24, 20, 7), geometry: str = "axial", modality: str = "CT", **meta):
    """int16 HU with negative values, distinct per voxel, so any reordering shows."""
    data = (np.arange(np.prod(shape), dtype=np.int32).reshape(1, *shape) * 3 - 1024).astype(np.int16)
    return make_image(data, GEOMETRIES[geometry], {"modality": modality, **meta})
