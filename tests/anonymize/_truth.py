"""An independent truth checker: which original values that must go are still in an output file?

It reads the Annex E table JSON itself (not medgan.anonymize.profile) and walks pydicom
datasets itself (not medgan's passes), so a bug in the passes cannot hide from it. Used by
the tests and by benchmarks/anon_bench.py to score medgan and its peers alike.

Definition. An *original value that must go* is the non-empty value of an element, at any
depth of the input (file meta included), that is
  - a private element (odd group), or nested in one;
  - an attribute whose Basic Profile action is not K (exact rows, curves 50xx, overlay data
    and comments 60xx,3000/4000), or nested in a sequence with such an action (`inherit=True`).
Standard UIDs (1.2.840.10008.*) are skipped: they name SOP classes and well-known instances,
nobody's identity. It is *left* when an element with the same tag, anywhere in the output,
holds the same value.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

TABLE = os.path.join(
    os.path.dirname(__file__), "..", "..", "medgan", "anonymize", "data", "ps3.15_annex_e_table_e1_1.json"
)


@dataclass(frozen=True)
class Left:
    tag: int
    value: str
    private: bool
    nested: bool  # found inside a sequence in the input


def _load_table() -> tuple[dict[int, str], list[tuple[int, int, int, int]]]:
    with open(TABLE, encoding="utf-8") as fh:
        rows = json.load(fh)["attributes"]
    exact, masks = {}, []
    for row in rows:
        if row["mask"]:
            m = row["mask"]
            if int(m["group_mask"], 16) == 0xFF00:  # curves and overlays; private is handled by parity
                masks.append(tuple(int(m[k], 16) for k in ("group", "group_mask", "element", "element_mask")))
        else:
            exact[int(row["hex"], 16)] = row["basic"]
    return exact, masks


EXACT, MASKS = _load_table()


def must_go(tag: int) -> bool:
    """True when the Basic Profile does not keep this tag."""
    if (tag >> 16) & 1:
        return True
    action = EXACT.get(tag)
    if action is not None:
        return action != "K"
    return any(((tag >> 16) & gm) == g and (tag & 0xFFFF & em) == e for g, gm, e, em in MASKS)


def _values(element) -> list[str]:
    try:
        value = element.value
    except Exception:
        return []
    if value is None or element.VR == "SQ":
        return []
    if isinstance(value, bytes | bytearray):
        return [value.hex()] if len(value) >= 2 and any(value) else []
    items = value if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [value]
    out = []
    for v in items:
        text = str(v).strip().strip("\0").strip()
        if text and not text.startswith("1.2.840.10008."):
            out.append(text)
    return out


def _walk(ds: Dataset, visit, inherited: bool, depth: int) -> None:
    for element in list(ds):
        tag = int(element.tag)
        flagged = inherited or must_go(tag)
        if element.VR == "SQ":
            for item in element.value or []:
                _walk(item, visit, flagged, depth + 1)
        else:
            visit(element, flagged, depth)


def originals(ds: Dataset, inherit: bool = True) -> set[tuple[int, str, bool, bool]]:
    """(tag, value, private, nested) of every original value that must go."""
    found: set[tuple[int, str, bool, bool]] = set()

    def visit(element, flagged: bool, depth: int) -> None:
        tag = int(element.tag)
        if flagged if inherit else must_go(tag):
            for value in _values(element):
                found.add((tag, value, bool((tag >> 16) & 1), depth > 0))

    for part in (getattr(ds, "file_meta", None), ds):
        if part is not None:
            _walk(part, visit, False, 0)
    return found


def values_by_tag(ds: Dataset) -> dict[int, set[str]]:
    """Every value in `ds` (file meta included), by tag, at any depth."""
    out: dict[int, set[str]] = defaultdict(set)

    def visit(element, flagged: bool, depth: int) -> None:
        out[int(element.tag)].update(_values(element))

    for part in (getattr(ds, "file_meta", None), ds):
        if part is not None:
            _walk(part, visit, False, 0)
    return out


def left_values(original: Dataset, output: Dataset, inherit: bool = True) -> list[Left]:
    """Original values that must go and that the output still holds under the same tag."""
    present = values_by_tag(output)
    return [
        Left(tag, value, private, nested)
        for tag, value, private, nested in sorted(originals(original, inherit))
        if value in present.get(tag, ())
    ]


def read(path: str | os.PathLike) -> Dataset:
    return pydicom.dcmread(os.fspath(path), force=True)
