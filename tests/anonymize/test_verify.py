"""`medgan phi-scan`: clean output passes; originals, leaks and missing markers are found, values never shown."""

from __future__ import annotations

import shutil

import pydicom
import pytest
from _corpus import SERIES, read

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def deidentified(tmp_path, run_cli):
    secret = tmp_path / "secret"
    secret.write_bytes(b"phi-scan-secret-0123456789")
    status, _, _ = run_cli("anonymize", SERIES, tmp_path / "out", "--secret-file", secret)
    assert status == 0
    return tmp_path / "out"


def test_clean_output_has_no_findings(deidentified, run_cli):
    status, out, _ = run_cli("phi-scan", deidentified, "--original", SERIES)
    assert status == 0, out
    assert "28 files scanned, 0 findings" in out


def test_the_originals_are_full_of_findings(run_cli):
    status, out, _ = run_cli("phi-scan", SERIES, "--limit", "0")
    assert status == 1
    for expected in (
        "marker: PatientIdentityRemoved",
        "private: private",
        "attribute: InstitutionName (0008,0080): present",
        "attribute: PatientBirthDate (0010,0030): holds a value",
        "attribute: SOPInstanceUID (0008,0018): UID not replaced",
        "curve or overlay present",
    ):
        assert expected in out, expected
    for secret_value in ("Brightwater", "RB4471902", "Ravenbrook"):
        assert secret_value not in out


def test_a_leak_into_kept_text_is_found_with_the_originals(deidentified, run_cli, tmp_path):
    leaked = tmp_path / "leaked"
    shutil.copytree(deidentified, leaked)
    victim = next(leaked.rglob("*.dcm"))
    ds = read(victim)
    ds.SeriesDescription = "follow-up of Harriet Brightwater"  # a name that only the originals know
    ds.ReferringPhysicianName = read(SERIES / "IM00001.dcm").ReferringPhysicianName
    ds.save_as(victim)
    status, out, _ = run_cli("phi-scan", leaked)
    assert status == 1 and "ReferringPhysicianName (0008,0090): holds a value" in out
    assert "original-identifier" not in out  # without originals, names are not known
    for link in ([], ["--secret-file", deidentified.parent / "secret"]):  # by pixel data, or by mapped UID
        status, out, _ = run_cli("phi-scan", leaked, "--original", SERIES, *link)
        assert status == 1
        assert "original-identifier: SeriesDescription (0008,103E)" in out
        assert "original-value: ReferringPhysicianName (0008,0090): still holds its original value" in out
        assert "Brightwater" not in out


def test_names_are_searched_only_in_the_outputs_of_their_patient(tmp_path, run_cli):
    """A surname can be an ordinary word elsewhere: another patient's file is not searched for it."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"phi-scan-secret-0123456789")
    originals = tmp_path / "originals"
    originals.mkdir()
    shutil.copy(SERIES / "IM00001.dcm", originals / "a.dcm")
    other = read(SERIES / "IM00002.dcm")
    other.PatientName, other.PatientID = "Field^Anna", "XY-778812"
    other.SOPInstanceUID = other.SOPInstanceUID + ".9"
    other.PixelData = bytes(len(other.PixelData))
    other.save_as(originals / "b.dcm")
    run_cli("anonymize", originals, tmp_path / "out", "--secret-file", secret)
    victim = read(SERIES / "IM00001.dcm")  # the first patient's output names "field" in a beam-like text
    (output,) = [p for p in (tmp_path / "out").rglob("*.dcm") if read(p).PixelData == victim.PixelData]
    ds = read(output)
    ds.Manufacturer = "Field Systems"  # kept text (K)
    ds.save_as(output)
    status, out, _ = run_cli("phi-scan", tmp_path / "out", "--original", originals, "--secret-file", secret)
    assert status == 0, out


def test_unreadable_and_unmarked_files_are_findings(tmp_path, run_cli):
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 10)
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "2.25.1"
    ds.save_as(tmp_path / "plain.dcm", implicit_vr=True, little_endian=True)
    status, out, _ = run_cli("phi-scan", tmp_path)
    assert status == 1
    assert "plain.dcm: marker: DeidentificationMethod (0012,0063): missing" in out
    assert "junk.dcm:" in out
