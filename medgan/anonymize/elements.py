"""Reading and writing single data elements safely, for the de-identification passes.

`medgan.anonymize.passes` decides what happens to each attribute; this module does it to one
element without tripping over what damaged files hold: the VR an element really has
(`element_vr`, the dictionary's for implicit VR or UN), whether a public attribute can be trusted
at all (`untrusted`), kept strings that are really swallowed elements (`garbled`), dummy values
valid for each VR (`dummy_value`), and writing a value without pydicom's validation refusing an
original value kept under a wrong VR (`set_element`).
"""

from __future__ import annotations

import re

from pydicom import config
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from medgan.anonymize import dates

__all__ = [
    "DUMMY_TEXT",
    "TEXT_VRS",
    "dummy_value",
    "element_vr",
    "garbled",
    "items_of",
    "map_values",
    "set_element",
    "text_of",
    "untrusted",
]

DUMMY_TEXT = "ANONYMIZED"
_BINARY = b"\0" * 8  # a multiple of every binary VR's unit (OB/OW/OF/OL/OD/OV/UN)
_DUMMY: dict[str, object] = {  # D: a dummy value valid for each VR
    **dict.fromkeys(("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"), DUMMY_TEXT),
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), _BINARY),
    **dict.fromkeys(("SL", "SS", "SV", "UL", "US", "UV"), 0),
    **dict.fromkeys(("FL", "FD"), 0.0),
    "AS": "000Y",
    "DA": dates.DUMMY_DATE,
    "DS": "0",
    "DT": dates.DUMMY_DATE + "000000",
    "IS": "0",
    "TM": "000000",
}
TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})  # text that may hold a name or an identifier


def dummy_value(vr: str | None):
    """The dummy value (action D) for an element of this VR; binary zeros for an unknown VR."""
    return _DUMMY.get(vr or "UN", _BINARY)


_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")  # text may hold TAB LF FF CR and ESC, nothing else


def garbled(ds: Dataset, tag: int, vr: str | None) -> bool:
    """A kept string with control bytes inside is not a value but swallowed elements: never write it out."""
    if vr not in _STRING_VRS:
        return False
    value = ds[tag].value
    values = value if isinstance(value, MultiValue | list | tuple) else [value]
    return any(_CONTROL.search(str(v).rstrip("\x00 ")) for v in values if v is not None)


def untrusted(tag: int, vr: str | None) -> bool:
    """A public attribute the profile does not list is kept only if the dictionary knows it with this VR.

    A damaged tag or length can turn, say, InstitutionName into an unlisted attribute that still
    holds the name; nothing unknown is known to be safe.
    """
    if not dictionary_has_tag(tag):
        return True
    if vr is None or vr == "UN":
        return False
    return vr not in dictionary_VR(tag).split(" or ")


def element_vr(ds: Dataset, tag: int) -> str | None:
    """The element's VR as written, else the dictionary's (first of "US or SS"...), else "UN"."""
    raw = ds.get_item(tag)
    vr = getattr(raw, "VR", None)
    if vr and vr != "UN":
        return str(vr)
    # Implicit VR, or UN for a tag the dictionary knows: pydicom decodes it with the dictionary VR.
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0] if " or " in vr else vr


def items_of(ds: Dataset, tag: int) -> list[Dataset]:
    """The items of a sequence element; none when its value cannot be decoded or is not a sequence."""
    try:
        items = ds[tag].value
    except Exception:
        return []
    return list(items) if isinstance(items, Sequence) else []


def text_of(ds: Dataset, tag: int) -> str:
    """The element's value as stripped text; empty when absent, binary or undecodable."""
    try:
        value = ds[tag].value
    except Exception:  # undecodable: no use as an identifier, and removed or replaced anyway
        return ""
    return "" if value is None or isinstance(value, bytes) else str(value).strip()


def set_element(ds: Dataset, tag: int, vr: str | None, value) -> None:
    """Replace the element with `value` under `vr` (an ambiguous VR takes its first reading)."""
    vr = vr or "UN"
    if vr in ("US or SS", "OB or OW", "US or OW", "US or SS or OW"):
        vr = vr.split(" or ")[0]
    # Our own values need no validation; an original value kept under a wrong VR must not stop the file.
    ds[tag] = DataElement(tag, vr, value, validation_mode=config.IGNORE)


def map_values(value, fn):
    """`fn` applied to a single value or to each of a multi-value; empty values stay as they are."""
    if value is None or value == "":
        return value
    if isinstance(value, MultiValue | list | tuple):
        return [fn(v) for v in value]
    return fn(value)
