"""The Annex E table as data, the options, and the IOD resolution of X, Z and combined codes."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from medgan.anonymize import iod
from medgan.anonymize.profile import COLUMNS, OPTION_CODES, action_table, load_profile, option_columns

TABLE = "medgan/anonymize/data/ps3.15_annex_e_table_e1_1.json"


def test_every_row_of_the_table_is_loaded_with_its_action():
    profile = load_profile()
    with open(TABLE, encoding="utf-8") as fh:
        data = json.load(fh)
    assert profile.count == data["count"] == 656
    assert len(profile.rules) + len(profile.masked) == 656
    counts = Counter(r.basic for r in (*profile.rules.values(), *profile.masked))
    assert counts == Counter(data["counts_by_basic_action"])
    assert profile.rules[0x00100010].basic == "Z"  # PatientName
    assert profile.rules[0x00080018].basic == "U"  # SOPInstanceUID
    assert profile.rules[0x00080080].basic == "X/Z/D"  # InstitutionName


def test_masked_rows_match_curves_overlays_and_private_tags():
    profile = load_profile()
    assert profile.rule_for(0x50020010).keyword == "CurveData"
    assert profile.rule_for(0x60023000).keyword == "OverlayData"
    assert profile.rule_for(0x601E4000).keyword == "OverlayComments"
    assert profile.rule_for(0x00291010).keyword == "PrivateAttributes"
    assert profile.rule_for(0x60000010) is None  # OverlayRows: not a row (medgan drops the group anyway)
    assert profile.rule_for(0x00280010) is None  # Rows: kept


@pytest.mark.parametrize(
    ("options", "tag", "expected"),
    [
        ({}, 0x00080018, "U"),
        ({"retain_uids": True}, 0x00080018, "K"),
        ({"retain_device_identity": True}, 0x00181000, "K"),  # DeviceSerialNumber
        ({"retain_institution_identity": True}, 0x00080080, "K"),
        ({"retain_patient_characteristics": True}, 0x00101010, "K"),  # PatientAge
        ({"retain_longitudinal": "full"}, 0x00080020, "K"),  # StudyDate
        ({"retain_longitudinal": "modified"}, 0x00080020, "C"),
        ({"clean_descriptors": True}, 0x00081030, "C"),  # StudyDescription
        ({"clean_descriptors": True}, 0x00100010, "Z"),  # an option never touches rows it does not name
        # Two options name DateOfLastDetectorCalibration (K and C): the more protective wins.
        ({"retain_device_identity": True, "retain_longitudinal": "modified"}, 0x0018700C, "C"),
        ({"retain_device_identity": True}, 0x0018700C, "K"),
    ],
)
def test_options_replace_the_basic_action_of_the_rows_they_name(options, tag, expected):
    assert action_table(option_columns(**options))[tag] == expected


def test_every_option_has_its_cid_7050_code():
    assert set(COLUMNS) <= set(OPTION_CODES)
    assert OPTION_CODES["BasicProfile"] == ("113100", "Basic Application Confidentiality Profile")
    assert len({code for code, _ in OPTION_CODES.values()}) == len(OPTION_CODES)
    with pytest.raises(ValueError, match="retain_longitudinal"):
        option_columns(retain_longitudinal="sometimes")


CT, ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"


@pytest.mark.parametrize(
    ("sop_class", "path", "keyword", "code", "expected"),
    [
        (CT, (), "ContentDate", "Z/D", "Z"),  # Type 2C in General Image
        (ENHANCED_CT, (), "ContentDate", "Z/D", "D"),  # Type 1 in the multi-frame module
        (CT, (), "InstitutionName", "X/Z/D", "X"),  # Type 3
        (ENHANCED_CT, (), "DeviceSerialNumber", "X/Z/D", "D"),  # Enhanced General Equipment: Type 1
        (CT, (), "ResponsiblePerson", "X", "Z"),  # Type 2C (animals): X would break the Patient module
        (CT, (), "PatientName", "Z", "Z"),
        (CT, (), "SourceImageSequence", "X/Z/U*", "U"),  # references kept, their UIDs replaced
        ("1.2.3.4.unknown", (), "InstitutionName", "X/Z/D", "D"),  # unknown IOD: never breaks conformance
        ("1.2.3.4.unknown", (), "StudyDescription", "X", "X"),
    ],
)
def test_codes_resolve_against_the_iod_type(sop_class, path, keyword, code, expected):
    assert iod.resolve(code, iod.required_type(iod.iod_for(sop_class), path, keyword)) == expected


def test_nested_paths_have_their_own_type():
    ct = iod.iod_for(CT)
    assert iod.required_type(ct, ("OtherPatientIDsSequence",), "PatientID") == 1
    assert iod.required_type(ct, (), "InstitutionName") == 3
    assert iod.required_type(None, (), "InstitutionName") is None
