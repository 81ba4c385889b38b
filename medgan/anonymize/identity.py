"""Who the patient is: the patient key, the pseudonym, and the identifiers to look for in free text.

`Clean Descriptors` and medgan's identifier sweep both need "the known identifiers of this
patient": the values of the attributes that name or number a person or a record (every PN
attribute, i.e. the patient and the staff, and the LO/SH/UC ones of the patient or whose
keyword says ID, Address, Telephone, AccessionNumber...), from attributes the profile does not
keep. They are gathered before the passes change anything, and any later text that still
contains one of them has it replaced.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from functools import lru_cache

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

__all__ = [
    "CODED_VALUES",
    "REDACTED",
    "IdentifierScrubber",
    "collect_identifiers",
    "identifier_kind",
    "identifiers_from",
    "keyed_pseudonym",
    "patient_key",
    "scrubber_for",
]

REDACTED = "[REDACTED]"
_NAME_VRS = {"PN"}
_ID_VRS = {"LO", "SH", "UC", "LT", "ST"}
# Person and record identifiers, not the names of institutions, stations or machines (those are
# removed where they stand, but words like "General" or "CT1" would hit ordinary text elsewhere).
_ID_KEYWORD = re.compile(r"^Patient|ID$|IDs$|Identifier$|Address|Telephone|AccessionNumber|Locator|Email")
_NOT_ID_KEYWORD = re.compile(r"Description|Comment|Code|Type|Sequence|Label|Institution|Station|Device|Issuer")
_MIN_NAME_PART = 3  # "Li" or "Ng" alone would hit ordinary words; the full name still counts
_MIN_VALUE = 4
_SPLIT_NAME = re.compile(r"[\^=\s,]+")
# Values taken from a vocabulary, never written about a person: the code and coding scheme of every
# code sequence item, and the identification of coding schemes. The sweep leaves them as they are
# (a scheme "TEST" is not the surname Test). CodeMeaning is free text and is swept like any other.
CODED_VALUES = frozenset(
    tag_for_keyword(keyword)
    for keyword in (
        "CodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "LongCodeValue",
        "CodingSchemeRegistry",
        "CodingSchemeExternalID",
        "CodingSchemeName",
        "CodingSchemeResponsibleOrganization",
        "MappingResourceName",
    )
)


def patient_key(ds: Dataset) -> str:
    """A stable key for the patient of `ds` (issuer + ID, else name + birth date, else the study)."""
    pid = _field(ds, "PatientID")
    if pid:
        return f"id:{_field(ds, 'IssuerOfPatientID')}\0{pid}"
    name = _field(ds, "PatientName")
    if name:
        return f"name:{name}\0{_field(ds, 'PatientBirthDate')}"
    study = _field(ds, "StudyInstanceUID")
    return f"study:{study}" if study else "unknown"


def _field(ds: Dataset, keyword: str) -> str:
    """The text of a top-level attribute by keyword ("" when absent or undecodable)."""
    if keyword not in ds:
        return ""
    try:
        element = ds[keyword]  # the DataElement (ds.get(keyword) would give its value)
    except Exception:  # a value pydicom cannot convert: no use as a key
        return ""
    return _text(element)


def keyed_pseudonym(secret: bytes, key: str, prefix: str = "ANON", length: int = 12) -> str:
    """prefix + `length` base32 characters of HMAC-SHA256(secret, key): stable, not invertible."""
    digest = hmac.new(secret, b"medgan-patient-v1\0" + key.encode("utf-8", "replace"), hashlib.sha256).digest()
    return prefix + base64.b32encode(digest).decode("ascii")[:length]


def _text(element) -> str:
    if element is None:
        return ""
    try:
        value = element.value
    except Exception:  # a value that cannot be decoded is no use as an identifier
        return ""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return ""
    return str(value).strip()


def identifier_kind(tag: int, vr: str | None) -> str | None:
    """ "name" (PN: split into parts too), "id" (a whole value), or None: what this attribute holds."""
    if vr in _NAME_VRS:
        return "name"
    if tag == 0x00100030:  # PatientBirthDate: a date, but one that identifies
        return "id"
    if vr in _ID_VRS:
        keyword = keyword_for_tag(tag)
        if keyword and _ID_KEYWORD.search(keyword) and not _NOT_ID_KEYWORD.search(keyword):
            return "id"
    return None


def identifiers_from(kind: str, text: str) -> set[str]:
    """The strings to look for, from one attribute value of that kind."""
    if kind == "name":
        return set(_name_parts(text))
    found = set()
    for value in text.split("\\"):
        value = value.strip()
        if len(value) >= _MIN_VALUE and not (value.isdigit() and len(value) < 5):
            found.add(value)
    return found


def collect_identifiers(ds: Dataset, actions: dict[int, str], depth_limit: int = 64) -> set[str]:
    """Identifier strings of `ds` at any depth (values of identity attributes that will not be kept)."""
    found: set[str] = set()
    _collect(ds, actions, found, depth_limit)
    return found


def _collect(ds: Dataset, actions: dict[int, str], found: set[str], depth: int) -> None:
    if depth <= 0:
        return
    for tag in list(ds.keys()):
        if (tag >> 16) & 1:
            continue
        raw = ds.get_item(tag)
        vr = getattr(raw, "VR", None)
        if not vr or vr == "UN":
            vr = _dictionary_vr(tag) or vr
        if vr == "SQ":
            try:
                items = ds[tag].value or []
            except Exception:
                continue
            for item in items:
                _collect(item, actions, found, depth - 1)
            continue
        if actions.get(tag) in (None, "K", "U"):
            continue
        kind = identifier_kind(tag, vr)
        if kind:
            found |= identifiers_from(kind, _text(ds[tag]))


def _name_parts(value: str) -> Iterable[str]:
    value = value.strip()
    if not value:
        return []
    parts = {p for p in _SPLIT_NAME.split(value) if len(p) >= _MIN_NAME_PART}
    readable = " ".join(p for p in re.split(r"[\^=]+", value) if p)
    return {value, readable, *parts}


def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


@lru_cache(maxsize=256)
def scrubber_for(identifiers: frozenset[str]) -> IdentifierScrubber:
    """One compiled scrubber per set of identifiers (the files of a series share theirs)."""
    return IdentifierScrubber(identifiers)


class IdentifierScrubber:
    """Replace every occurrence (case-insensitive) of known identifiers in a string."""

    def __init__(self, identifiers: Iterable[str]):
        words = sorted({w for w in identifiers if w and w.upper() not in _HARMLESS}, key=len, reverse=True)
        self.empty = not words
        # Longest first, so "Harriet Jane" goes before "Harriet"; \b keeps "Jane" out of "Janet".
        pattern = "|".join(rf"(?<![A-Za-z0-9]){re.escape(w)}(?![A-Za-z0-9])" for w in words)
        self._str = re.compile(pattern, re.IGNORECASE) if words else None
        ascii_words = all(w.isascii() for w in words)
        self._bytes = re.compile(pattern.encode("ascii"), re.IGNORECASE) if words and ascii_words else None

    def may_match(self, raw: bytes) -> bool:
        """Cheap test on undecoded bytes (True when unsure)."""
        if self._str is None:
            return False
        return self._bytes is None or self._bytes.search(raw) is not None

    def scrub(self, text: str) -> str:
        if self._str is None:
            return text
        return self._str.sub(REDACTED, text)


# Values that the passes themselves write, or that say nothing about anyone.
_HARMLESS = {"ANONYMIZED", "ANONYMOUS", "UNKNOWN", "NONE", "NULL", "N/A", "YES", "REMOVED", REDACTED}
