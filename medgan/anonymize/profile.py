"""PS3.15 Annex E Table E.1-1 as data: every attribute, its Basic Profile action and option columns.

The table ships inside the package (`data/ps3.15_annex_e_table_e1_1.json`, assembled from the
standard; see its `sources`). Nothing here hand-types a tag: the actions come from that file.

Action codes: X remove, Z empty, D dummy value, U keyed UID, K keep, C clean, and the combined
codes (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) that `medgan.anonymize.iod` resolves against the IOD.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = [
    "COLUMNS",
    "OPTION_CODES",
    "Profile",
    "Rule",
    "action_table",
    "load_profile",
    "option_columns",
]

TABLE_FILE = "ps3.15_annex_e_table_e1_1.json"

# Option column of the table -> its CID 7050 code (DCM) and meaning, as the standard names them.
OPTION_CODES: dict[str, tuple[str, str]] = {
    "BasicProfile": ("113100", "Basic Application Confidentiality Profile"),
    "CleanPixelData": ("113101", "Clean Pixel Data Option"),
    "CleanDescriptors": ("113105", "Clean Descriptors Option"),
    "RetainLongitudinalTemporalInformationFullDates": (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    "RetainLongitudinalTemporalInformationModifiedDates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "RetainPatientCharacteristics": ("113108", "Retain Patient Characteristics Option"),
    "RetainDeviceIdentity": ("113109", "Retain Device Identity Option"),
    "RetainUIDs": ("113110", "Retain UIDs Option"),
    "RetainSafePrivate": ("113111", "Retain Safe Private Option"),
    "RetainInstitutionIdentity": ("113112", "Retain Institution Identity Option"),
}
# The option columns medgan implements (Clean Graphics and Clean Structured Content are not offered).
COLUMNS = tuple(name for name in OPTION_CODES if name not in ("BasicProfile", "CleanPixelData"))


@dataclass(frozen=True)
class Rule:
    """One row of Table E.1-1."""

    tag: int | None  # None for masked rows (curves, overlays, private attributes)
    keyword: str
    name: str
    basic: str  # Basic Profile action code
    vr: str | None
    options: dict[str, str] = field(default_factory=dict)  # option column -> action (K or C)
    mask: tuple[int, int, int, int] | None = None  # (group, group_mask, element, element_mask)

    def matches(self, tag: int) -> bool:
        if self.tag is not None:
            return tag == self.tag
        assert self.mask is not None
        group, group_mask, element, element_mask = self.mask
        return ((tag >> 16) & group_mask) == group and (tag & 0xFFFF & element_mask) == element

    def action(self, columns: frozenset[str]) -> str:
        """The action once the enabled option columns are applied.

        An option replaces the Basic Profile action for the rows it names. Where two enabled
        options name one row (e.g. DateOfLastDetectorCalibration under Retain Device Identity,
        K, and Modified Dates, C) the more protective wins: C before K.
        """
        chosen = [self.options[c] for c in columns if c in self.options]
        if not chosen:
            return self.basic
        return "C" if "C" in chosen else chosen[0]


@dataclass(frozen=True)
class Profile:
    """The whole table: rules by tag, the masked rows, and the table's own metadata."""

    rules: dict[int, Rule]
    masked: tuple[Rule, ...]
    version: str
    count: int

    def rule_for(self, tag: int) -> Rule | None:
        """The rule for one tag (exact rows first, then the curve/overlay/private masks)."""
        rule = self.rules.get(tag)
        if rule is not None:
            return rule
        for masked in self.masked:
            if masked.matches(tag):
                return masked
        return None

    def by_keyword(self, keyword: str) -> Rule:
        for rule in (*self.rules.values(), *self.masked):
            if rule.keyword == keyword:
                return rule
        raise KeyError(keyword)


@lru_cache(maxsize=1)
def load_profile() -> Profile:
    """Parse the packaged table once per process."""
    text = resources.files("medgan.anonymize").joinpath("data", TABLE_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
    rules: dict[int, Rule] = {}
    masked: list[Rule] = []
    for row in data["attributes"]:
        rule = _rule(row)
        if rule.tag is None:
            masked.append(rule)
        else:
            rules[rule.tag] = rule
    if len(rules) + len(masked) != data["count"]:
        raise RuntimeError(f"{TABLE_FILE}: {len(rules) + len(masked)} rows parsed, the table says {data['count']}")
    return Profile(rules, tuple(masked), data["standard_version_basic_column"], data["count"])


def _rule(row: dict[str, Any]) -> Rule:
    mask = row.get("mask")
    if mask:
        bits = tuple(int(mask[k], 16) for k in ("group", "group_mask", "element", "element_mask"))
        tag = None
    else:
        bits = None
        tag = int(row["hex"], 16)
    return Rule(
        tag=tag,
        keyword=row["keyword"],
        name=row["name"],
        basic=row["basic"],
        vr=row["vr"],
        options=dict(row.get("options_2024b") or {}),
        mask=bits,  # type: ignore[arg-type]
    )


def option_columns(
    *,
    retain_uids: bool = False,
    retain_device_identity: bool = False,
    retain_institution_identity: bool = False,
    retain_patient_characteristics: bool = False,
    retain_longitudinal: str = "off",  # "off", "full" (dates kept) or "modified" (dates shifted per patient)
    clean_descriptors: bool = False,
    retain_safe_private: bool = False,
) -> frozenset[str]:
    """Option flags -> the table's column names."""
    if retain_longitudinal not in ("off", "full", "modified"):
        raise ValueError(f"retain_longitudinal must be off, full or modified, got {retain_longitudinal!r}")
    flags = {
        "RetainUIDs": retain_uids,
        "RetainDeviceIdentity": retain_device_identity,
        "RetainInstitutionIdentity": retain_institution_identity,
        "RetainPatientCharacteristics": retain_patient_characteristics,
        "RetainLongitudinalTemporalInformationFullDates": retain_longitudinal == "full",
        "RetainLongitudinalTemporalInformationModifiedDates": retain_longitudinal == "modified",
        "CleanDescriptors": clean_descriptors,
        "RetainSafePrivate": retain_safe_private,
    }
    return frozenset(name for name, on in flags.items() if on)


@lru_cache(maxsize=32)
def action_table(columns: frozenset[str]) -> dict[int, str]:
    """tag -> action for every exact row, with the options applied (built once per option set)."""
    return {tag: rule.action(columns) for tag, rule in load_profile().rules.items()}
