"""Against outside references: dciodvfy finds no new error in written files; deid-data comes out clean."""

from __future__ import annotations

import os
import re
import subprocess

import _truth
import pytest
from _corpus import SECRET, SERIES, deid_data, dicom_files, read

from medgan.anonymize import worker
from medgan.anonymize.recipe import Policy, Recipe

pytestmark = [pytest.mark.external, pytest.mark.filterwarnings("ignore::UserWarning")]

# One file of each kind in pydicom's test data: CT, MR, multi-frame, RT, SR, SEG, PET, US, compressed.
KINDS = [
    "CT_small.dcm",
    "MR_small.dcm",
    "emri_small.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "rtstruct.dcm",
    "test-SR.dcm",
    "liver_1frame.dcm",
    "JPEG2000.dcm",
    "US1_J2KR.dcm",
    "waveform_ecg.dcm",
    "eCT_Supplemental.dcm",
]
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|[0-9][0-9.]*")
_VALUES = re.compile(r"<[^>]*>|\"[^\"]*\"")


def dciodvfy_errors(path) -> set[str]:
    """dciodvfy's error lines, with values and numbers blanked so that new UIDs or dates compare equal."""
    from dicom_tools import SYNTHETIC_DATA_ERROR, external_tool

    tool = external_tool("dciodvfy")
    result = subprocess.run([tool, os.fspath(path)], capture_output=True, timeout=60, check=False)
    text = (result.stdout + result.stderr).decode("utf-8", "replace")
    lines = [line for line in text.splitlines() if "Error" in line and not line.startswith(SYNTHETIC_DATA_ERROR)]
    return {_NUMBERS.sub("#", _VALUES.sub("<>", line)) for line in lines}


def test_dciodvfy_reports_no_error_the_input_did_not_have(tmp_path):
    from pydicom.data import get_testdata_file

    worker.init_worker(Policy.from_recipe(Recipe(quarantine_burned_in=False), SECRET))
    inputs = [str(SERIES / "IM00001.dcm"), *(get_testdata_file(name) for name in KINDS)]
    checked = 0
    for path in inputs:
        if path is None:
            continue
        result = worker.process_file(path, None, "x", str(tmp_path))
        assert result.status == "ok", (path, result.reason)
        new = dciodvfy_errors(result.temp_paths[0]) - dciodvfy_errors(path)
        assert not new, (os.path.basename(path), sorted(new))
        checked += 1
    assert checked >= 10


def test_deid_data_comes_out_clean_and_nothing_is_lost(tmp_path):
    folder = deid_data()
    worker.init_worker(Policy.from_recipe(Recipe(), SECRET))
    statuses = {}
    for path in dicom_files(folder):
        result = worker.process_file(path, None, "x", str(tmp_path))
        statuses[os.path.relpath(path, folder)] = result.status
        assert result.status in ("ok", "quarantined"), (path, result.reason)
        if result.status == "ok":
            original, output = read(path), read(result.temp_paths[0])
            assert _truth.left_values(original, output, inherit=False) == [], path
            assert not [e for e in output.iterall() if e.tag.is_private]
            assert output.PatientIdentityRemoved == "YES"
            assert output.PixelData == original.PixelData
            os.remove(result.temp_paths[0])
    assert len(statuses) >= 13
    assert all(s == "quarantined" for name, s in statuses.items() if name.startswith("ultrasounds"))
    assert sum(s == "ok" for s in statuses.values()) >= 9
