"""Recipes, secrets, mapping CSVs, and the keyed UID and date helpers."""

from __future__ import annotations

import os
import re
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medgan.anonymize.dates import DUMMY_DATE, patient_offset_days, shift_da, shift_dt
from medgan.anonymize.recipe import load_policy, load_secret, read_mapping
from medgan.anonymize.uids import UidMapper
from medgan.errors import ConfigError, InputError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")  # PS3.5 9.1


def test_the_example_recipe_loads(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("0123456789abcdef0123")
    policy = load_policy(os.path.join(REPO, "configs", "anonymize_research.yaml"), secret)
    assert "RetainLongitudinalTemporalInformationModifiedDates" in policy.columns
    assert ("SIEMENS MR HEADER", 0x0019, 0x0C) in policy.safe_private
    assert policy.pixel_regions[0].boxes == [(0, 0, 640, 40)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("retain_uid: true\n", "unknown key 'retain_uid'"),
        ("retain_longitudinal: sometimes\n", "retain_longitudinal"),
        ("safe_private: [{creator: X, group: 0x0018, element: 1}]\n", "odd"),
        ("pixel_regions: [{boxes: [[10, 0, 5, 5]]}]\n", "x0 < x1"),
    ],
)
def test_recipe_mistakes_are_one_line_errors(tmp_path, text, message):
    (tmp_path / "r.yaml").write_text(text)
    (tmp_path / "s").write_text("0123456789abcdef0123")
    with pytest.raises(ConfigError, match=message):
        load_policy(tmp_path / "r.yaml", tmp_path / "s")


def test_an_unquoted_off_is_the_word_off(tmp_path):
    """YAML 1.1 reads `retain_longitudinal: off` as False; the recipe takes it as written."""
    (tmp_path / "recipe.yaml").write_text("retain_longitudinal: off\n")
    (tmp_path / "secret").write_bytes(b"s" * 32)
    policy = load_policy(str(tmp_path / "recipe.yaml"), str(tmp_path / "secret"))
    assert policy.retain_longitudinal == "off"


def test_the_default_secret_is_created_once_private_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDGAN_SECRET_FILE", str(tmp_path / "cfg" / "anon.secret"))
    first = load_secret()
    assert len(first) >= 32 and load_secret() == first
    assert stat.S_IMODE(os.stat(tmp_path / "cfg" / "anon.secret").st_mode) == 0o600
    (tmp_path / "short").write_text("abc")
    with pytest.raises(ConfigError, match="at least 16"):
        load_secret(tmp_path / "short")
    with pytest.raises(InputError, match="not found"):
        load_secret(tmp_path / "absent")


def test_mapping_csv(tmp_path):
    (tmp_path / "map.csv").write_text("original_patient_id,pseudonym\nRB4471902,SUBJ-001\n")
    assert read_mapping(tmp_path / "map.csv") == {"RB4471902": "SUBJ-001"}
    (tmp_path / "bad.csv").write_text("id,name\n1,2\n")
    with pytest.raises(ConfigError, match="original_patient_id,pseudonym"):
        read_mapping(tmp_path / "bad.csv")
    (tmp_path / "twice.csv").write_text("original_patient_id,pseudonym\nA,X\nA,Y\n")
    with pytest.raises(ConfigError, match="mapped twice"):
        read_mapping(tmp_path / "twice.csv")


@given(st.from_regex(r"1\.[1-9][0-9]{0,8}(\.[1-9][0-9]{0,8}){1,6}", fullmatch=True))
def test_keyed_uids_are_valid_stable_and_secret_dependent(uid):
    new = UidMapper(b"secret-one-0123456789")(uid)
    assert UID.match(new) and new.startswith("2.25.") and len(new) <= 64
    assert UidMapper(b"secret-one-0123456789")(uid) == new
    assert UidMapper(b"secret-two-0123456789")(uid) != new


def test_standard_uids_are_never_remapped():
    assert UidMapper(b"x" * 20)("1.2.840.10008.5.1.4.1.1.2") == "1.2.840.10008.5.1.4.1.1.2"


@given(st.dates(), st.text(min_size=1, max_size=20))
def test_date_shifts_are_per_patient_and_keep_intervals(day, patient):
    offset = patient_offset_days(b"s" * 20, patient, 3650)
    assert -3650 <= offset <= -1 and offset == patient_offset_days(b"s" * 20, patient, 3650)
    text = day.strftime("%Y%m%d")
    shifted = shift_da(text, offset)
    assert shifted != text or shifted == DUMMY_DATE


def test_date_shift_formats():
    assert shift_da("20240315", -10) == "20240305"
    assert shift_da("20240315\\20240316", -1) == "20240314\\20240315"
    assert shift_da("2024-garbage", -1) == DUMMY_DATE
    assert shift_dt("20240315103000.5+0100", -15) == "20240229103000.5+0100"
    assert shift_dt("2024", -1) == "1900"  # too coarse to shift: not kept either
