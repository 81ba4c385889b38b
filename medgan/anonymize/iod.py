"""Resolve Annex E codes against the IOD: the combined codes (X/Z, X/D, Z/D, X/Z/D, X/Z/U*), and X and Z.

"X unless Z or D is required to maintain IOD conformance": the choice depends on the Type the
file's IOD gives the attribute at that place (top level, or a path of sequence keywords).
`data/iod_types.json` holds, per IOD, the Type 1 and Type 2 paths of every attribute coded X,
Z or combined (generated from highdicom's copy of the standard's module tables by
`data/make_iod_types.py`). Plain X and Z get the same treatment, because a few IODs require
what the table removes (ResponsiblePerson is Type 2C for animals): X becomes Z there, and Z
becomes D where the IOD needs a value. For a SOP Class the table does not know, a combined
code takes the choice that keeps any IOD conformant (D, then U, then Z), and X and Z stay.
Every alternative removes the original value, so privacy is the same either way.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

__all__ = ["iod_for", "required_type", "resolve"]

TYPES_FILE = "iod_types.json"


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    text = resources.files("medgan.anonymize").joinpath("data", TYPES_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
    return data["sop_classes"], data["types"]


def iod_for(sop_class_uid: str) -> str | None:
    """The IOD name (e.g. "ct-image") of a SOP Class UID, or None when the table does not know it."""
    return _tables()[0].get(sop_class_uid)


def required_type(iod: str | None, path: tuple[str, ...], keyword: str) -> int | None:
    """1 or 2 where the IOD requires the attribute at `path`, 3 where it does not, None for an unknown IOD."""
    if iod is None:
        return None
    found = _tables()[1].get(iod, {}).get("/".join((*path, keyword)))
    return 3 if found is None else int(found)


def resolve(code: str, attribute_type: int | None) -> str:
    """A code and the attribute's Type -> one of X, Z, D, U (codes other than X, Z and combined pass through)."""
    if code in ("X", "Z"):
        if attribute_type == 1:
            return "D"
        return "Z" if attribute_type == 2 else code
    if "/" not in code:
        return code
    if code == "X/Z/U*":
        # Keep the references with their UIDs replaced, whatever the Type: removing them leaves
        # e.g. a Segmentation's ReferencedSeriesSequence pointing at nothing (dciodvfy flags it),
        # and the derivation links are worth keeping. Privacy is the same: the UIDs are replaced.
        return "U"
    options = code.replace("*", "").split("/")
    if attribute_type is None:  # unknown IOD: the alternative that can never break conformance
        for choice in ("D", "U", "Z", "X"):
            if choice in options:
                return choice
    if attribute_type == 1:
        wanted = ("D", "U", "Z")
    elif attribute_type == 2:
        wanted = ("Z", "D", "U")
    else:
        wanted = ("X", "Z", "D")
    for choice in wanted:
        if choice in options:
            return choice
    return options[-1]
