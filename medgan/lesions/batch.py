"""Lesions into every scan of a folder, each with its organ mask from a folder of masks, and a report.

A scan's mask is the file of the same name in the mask folder (any of .nii.gz, .nii, .nrrd, .mha
for the same stem, so `ct.nii.gz` may have `ct.nrrd`); a DICOM series in folder `IN/a/b` has mask
`MASKS/a/b.nii.gz` (or another suffix). Each scan's seed is drawn from the run's seed and the
scan's name, so adding or removing scans changes no other scan's lesions. A scan that fails (bad
file, no mask, lesions that do not fit) is reported and the batch goes on; `report.csv` and
`report.json` in the output folder list every scan with its status, outputs or error.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
import zlib
from collections.abc import Callable

import numpy as np

from medgan.errors import InputError, MedganError
from medgan.io.atomic import atomic_file, check_apart
from medgan.lesions.scans import LesionRequest, scan_name, simulate_scan

__all__ = ["simulate_folder"]

_MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_COLUMNS = ("name", "status", "lesions", "image", "labels", "records", "error", "seconds")


def scan_seed(seed: int, name: str) -> int:
    """The seed of one scan of a batch: from the run's seed and the scan's name only."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]).generate_state(1)[0])


def _relative_name(root: str, source: str) -> str:
    relative = os.path.relpath(source, root) if os.path.isdir(root) else os.path.basename(source)
    relative = os.path.basename(os.path.normpath(root)) if relative == "." else relative
    return scan_name(relative)


def _mask_for(mask_dir: str, relative: str) -> str:
    for suffix in _MASK_SUFFIXES:
        candidate = os.path.join(mask_dir, relative + suffix)
        if os.path.isfile(candidate):
            return candidate
    raise InputError(f"no organ mask for it in {mask_dir} (looked for {relative}{_MASK_SUFFIXES[0]} and the like)")


def simulate_folder(
    source: str,
    mask_dir: str,
    out_dir: str,
    request: LesionRequest,
    progress: Callable[[int, int, str, str], None] | None = None,  # (done, total, name, status)
) -> list[dict]:
    """Simulate lesions into every scan under `source`; returns the report rows (also written to out_dir)."""
    from medgan.io import find_images

    check_apart(out_dir, [("input folder", source), ("mask folder", mask_dir)], advice="another --out folder")
    found, problems = find_images(source, skip_invalid=True)
    if not found and not problems:
        raise InputError("no images found", path=source)
    rows = [{"name": os.path.relpath(p.path, source), "status": "failed", "lesions": 0, "error": p.reason}
            for p in problems]  # fmt: skip
    total = len(found)
    for done, item in enumerate(found, start=1):
        relative = _relative_name(source, item.source)
        name = relative.replace(os.sep, "_")
        row = {"name": name, "status": "failed", "lesions": 0}
        started = time.monotonic()
        try:
            mask = _mask_for(mask_dir, relative)
            image = item.load()
            one = dataclasses.replace(request, seed=scan_seed(request.seed, name))
            outputs = simulate_scan(item.source, mask, out_dir, one, image=image, name=name)
            row.update(status="ok", lesions=len(outputs.lesions), image=outputs.image, labels=outputs.labels,
                       records=outputs.records)  # fmt: skip
        except MedganError as err:
            row["error"] = err.reason if err.path in (None, item.source) else str(err)
        row["seconds"] = round(time.monotonic() - started, 3)
        rows.append(row)
        if progress is not None:
            progress(done, total, name, row["status"])
    _write_report(out_dir, rows)
    return rows


def _write_report(out_dir: str, rows: list[dict]) -> None:
    """report.csv and report.json; a run's report always replaces an older one."""
    os.makedirs(out_dir, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in _COLUMNS})
    for name, content in (("report.csv", text.getvalue()), ("report.json", json.dumps(rows, indent=1) + "\n")):
        target = os.path.join(out_dir, name)
        with atomic_file(target, overwrite=True, suffix=name[-5:]) as temp, open(temp, "w", encoding="utf-8") as fh:
            fh.write(content)
