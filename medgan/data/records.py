"""Training records from a folder or a CSV of scans: one dict per scan, naming its files.

    records = find_records("scans/")                                # every image under a folder
    records = find_records("pairs.csv", TASKS.get("pix2pix").inputs)  # the columns a task reads

A CSV has a header row; `image` names each scan (a file or a DICOM folder, relative to the CSV)
and the other columns are the task's inputs (`medgan.tasks`): a `source` image for pix2pix, a
`label_map` for label2image, a class `label` (an integer from 0), and so on. A DICOM folder of
several series takes `<column>_series` to name one. A folder's records carry `found_in` (the
folder), so that files which turn out unreadable are skipped; a CSV's carry `csv` and
`csv_line`, so that errors name the line.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import Any

from medgan.errors import InputError
from medgan.tasks.base import Input

__all__ = ["ORIGIN_KEYS", "find_records", "known_inputs"]

# Where a record came from, for messages; not part of what is loaded (nor of the disk cache's key).
ORIGIN_KEYS = ("found_in", "csv", "csv_line")


def known_inputs() -> list[Input]:
    """Every input some registered task reads (optional here), by key: a CSV's columns for any task."""
    from medgan.tasks import TASKS

    found: dict[str, Input] = {}
    for name in TASKS:
        for item in TASKS.get(name).inputs:
            found.setdefault(item.key, Input(item.key, item.kind, required=False))
    return list(found.values())


def find_records(source: str, inputs: Sequence[Input] | None = None) -> list[dict[str, Any]]:
    """One record per scan: every image under a folder, or the rows of a CSV (the columns of `inputs`;
    None reads every column a registered task knows)."""
    if source.lower().endswith(".csv"):
        return _csv_records(source, known_inputs() if inputs is None else inputs)
    from medgan.io import find_images

    found, problems = find_images(source, skip_invalid=True)
    searched = os.path.isdir(source)
    records = [{"image": f.source, "image_series": f.series.key if f.series else None} for f in found]
    if searched:
        records = [{**r, "found_in": source} for r in records]
    if not records:
        detail = f"; {len(problems)} file(s) unreadable, e.g. {problems[0]}" if problems else ""
        raise InputError(f"no readable NIfTI/DICOM/NRRD/MHA images here{detail}; point data.source elsewhere", source)
    return records


def _csv_records(path: str, inputs: Sequence[Input]) -> list[dict[str, Any]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"cannot read the CSV ({err})", path=path) from None
    if not rows or "image" not in rows[0]:
        raise InputError("a data CSV needs a header row with an 'image' column and at least one row", path=path)
    folder = os.path.dirname(os.path.abspath(path))
    files = ["image", *[i.key for i in inputs if i.is_file and i.key != "image"]]
    classes = [i.key for i in inputs if not i.is_file]
    records = []
    for line, row in enumerate(rows, start=2):
        record: dict[str, Any] = {}
        for key in files:
            if row.get(key):
                record[key] = row[key] if os.path.isabs(row[key]) else os.path.join(folder, row[key])
                if not os.path.exists(record[key]):
                    raise InputError(f"line {line}: {key} {record[key]}: no such file or folder", path=path)
                if row.get(f"{key}_series"):
                    record[f"{key}_series"] = row[f"{key}_series"]
        if "image" not in record:
            raise InputError(f"line {line}: the 'image' column is empty", path=path)
        for key in classes:
            if row.get(key):
                record[key] = _class(row[key], key, line, path)
        records.append({**record, "csv": path, "csv_line": line})
    return records


def _class(text: str, key: str, line: int, path: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"line {line}: {key} {text!r} is not an integer class", path=path) from None
    if value < 0:
        raise InputError(f"line {line}: {key} {value} is negative; classes are numbered from 0", path=path)
    return value
