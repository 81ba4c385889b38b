"""Training records from a folder or a CSV of scans: one dict per scan, naming its files.

    records = find_records("scans/")                                # every image under a folder
    records = find_records("pairs.csv", TASKS.get("pix2pix").inputs)  # the columns a task reads

An `Input` is one column and what it holds: an image, a label map, a mask or a class. Tasks
(`medgan.tasks`) declare theirs; datasets load and prepare each by its kind.

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
from dataclasses import dataclass
from typing import Any, Literal

from medgan.errors import InputError

__all__ = ["DEFAULT_INPUTS", "ORIGIN_KEYS", "Input", "find_records"]

# Where a record came from, for messages; not part of what is loaded (nor of the disk cache's key).
ORIGIN_KEYS = ("found_in", "csv", "csv_line")

InputKind = Literal["image", "labels", "mask", "class"]


@dataclass(frozen=True)
class Input:
    """One thing a task reads per sample: a batch key and the CSV column of the same name.

    kind: "image" (intensities, windowed to [-1, 1]), "labels" (an integer label map, resampled by
    nearest label, counted into the record's `num_labels`), "mask" (an integer map whose non-zero voxels
    are the region; resampled by nearest label, not counted) or "class" (an integer CSV value, not a file).
    required: every CSV row must fill it; an optional one is used where given.
    """

    key: str
    kind: InputKind = "image"
    required: bool = True

    @property
    def is_file(self) -> bool:
        return self.kind != "class"

    @property
    def is_labels(self) -> bool:
        """Resampled by nearest label, padded with 0, never windowed."""
        return self.kind in ("labels", "mask")


DEFAULT_INPUTS = (Input("image"), Input("label", "class", required=False))  # scans, with a class where given


def find_records(source: str, inputs: Sequence[Input] = DEFAULT_INPUTS) -> list[dict[str, Any]]:
    """One record per scan: every image under a folder, or the rows of a CSV (the columns of `inputs`, a task's
    declared inputs; by default the image and a class label)."""
    if source.lower().endswith(".csv"):
        return _csv_records(source, inputs)
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
