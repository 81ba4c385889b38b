"""Real DICOM files for the de-identification tests, found or fetched offline, and small helpers.

* the sample CT series with its fictional patient (sample_data/dicom/ct_series);
* pydicom's test files (155 readable files that are not DICOMDIR indexes, with pydicom 3.0.2);
* deid-data (a PyPI sdist, never installed): fetched once into the test cache with
  `pip download --no-deps --no-binary :all: deid-data`; skipped when it cannot be had, unless
  MEDGAN_REQUIRE_EXTERNAL=1.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import external
import pydicom

from medgan.anonymize.recipe import Policy, Recipe

REPO = Path(__file__).resolve().parents[2]
SERIES = REPO / "sample_data" / "dicom" / "ct_series"
SECRET = b"test-secret-0123456789abcdef"
# The fictional patient's identity, as sample_data/README.md lists it.
SAMPLE_IDENTIFIERS = (
    b"Brightwater",
    b"Harriet",
    b"RB4471902",
    b"19560214",
    b"Ravenbrook",
    b"555-01",
)


def policy(secret: bytes = SECRET, **recipe) -> Policy:
    """A policy from recipe keywords (the Basic Profile when none are given)."""
    return Policy.from_recipe(Recipe(**recipe), secret)


def read(path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(os.fspath(path), force=True)


def pydicom_files() -> list[str]:
    """The readable pydicom test files, DICOMDIR indexes excluded."""
    base = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(glob.glob(os.path.join(base, "**", "*"), recursive=True)):
            if not os.path.isfile(path):
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) != "1.2.840.10008.1.3.10":
                found.append(path)
    return found


def deid_data() -> Path:
    """The deid-data files folder (CT head, DX, ultrasound with burned-in text, ...)."""
    cache = external.cache_dir()
    folders = sorted(cache.glob("deid-data-*/deid_data/data"))
    if folders:
        return folders[-1]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "deid-data", "-d", str(cache)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    archives = sorted(cache.glob("deid-data-*.tar.gz"))
    if result.returncode != 0 or not archives:
        external.unavailable("cannot download the deid-data sdist from PyPI")
    with tarfile.open(archives[-1]) as tar:
        tar.extractall(cache, filter="data")
    return sorted(cache.glob("deid-data-*/deid_data/data"))[-1]


def dicom_files(folder) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(os.fspath(folder), "**", "*.dcm"), recursive=True))
