"""One pseudonym and one date offset per patient: different patients never share them."""

from __future__ import annotations

import copy
import datetime as dt
import os
import shutil

import external
import pydicom
import pytest
from _corpus import SECRET, SERIES, read
from _corpus import policy as make_policy

from medgan.anonymize.batch import anonymize_tree
from medgan.anonymize.identity import patient_key
from medgan.anonymize.passes import Deidentifier

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SAMPLE = sorted(str(p) for p in SERIES.glob("*.dcm"))


def _day(text: str) -> dt.date:
    return dt.datetime.strptime(str(text), "%Y%m%d").date()


def _pseudonym_and_shift(path: str, deidentifier: Deidentifier) -> tuple[str, int]:
    original = read(path)
    ds = copy.deepcopy(original)
    outcome = deidentifier(ds)
    assert outcome.status == "ok"
    assert ds.PatientID == outcome.patient
    return outcome.patient, (_day(original.StudyDate) - _day(ds.StudyDate)).days


def test_patient_key_reads_the_patient_id_and_name():
    sample = read(SAMPLE[0])
    assert patient_key(sample) == f"id:{sample.IssuerOfPatientID}\0{sample.PatientID}"
    del sample.PatientID
    assert patient_key(sample) == f"name:{sample.PatientName}\0{sample.PatientBirthDate}"
    del sample.PatientName
    assert patient_key(sample) == f"study:{sample.StudyInstanceUID}"
    ct = read(external.pydicom_file("CT_small.dcm"))
    assert patient_key(ct) == f"id:\0{ct.PatientID}"


def test_two_patients_get_two_pseudonyms_and_two_date_offsets():
    deidentifier = Deidentifier(make_policy(retain_longitudinal="modified"))
    first = _pseudonym_and_shift(SAMPLE[0], deidentifier)
    second = _pseudonym_and_shift(external.pydicom_file("CT_small.dcm"), deidentifier)
    third = _pseudonym_and_shift(external.pydicom_file("rtdose.dcm"), deidentifier)
    assert len({first[0], second[0], third[0]}) == 3
    assert len({first[1], second[1], third[1]}) == 3
    assert all(shift >= 1 for _, shift in (first, second, third))


def test_one_patient_in_several_files_gets_one_pseudonym_and_one_offset():
    deidentifier = Deidentifier(make_policy(retain_longitudinal="modified"))
    results = {_pseudonym_and_shift(path, deidentifier) for path in SAMPLE[:3]}
    assert len(results) == 1
    # The same patient and ID in another file with another study: still the same person.
    other = read(external.pydicom_file("CT_small.dcm"))
    sample = read(SAMPLE[0])
    other.PatientID, other.IssuerOfPatientID, other.PatientName = sample.PatientID, sample.IssuerOfPatientID, "X^Y"
    outcome = deidentifier(other)
    assert outcome.patient == next(iter(results))[0]


def test_batch_files_two_patients_under_two_pseudonym_folders(tmp_path):
    source = tmp_path / "in"
    shutil.copytree(SERIES, source / "ct")
    shutil.copyfile(external.pydicom_file("CT_small.dcm"), source / "other.dcm")
    output = tmp_path / "out"
    summary = anonymize_tree(str(source), str(output), make_policy(SECRET))
    assert summary.failed == 0
    folders = sorted(d for d in os.listdir(output) if not d.startswith(".") and d != "report.csv")
    assert len(folders) == 2
    counts = sorted(len([f for _, _, fs in os.walk(output / d) for f in fs]) for d in folders)
    assert counts == [1, len(SAMPLE)]
    for folder in folders:
        for root, _, names in os.walk(output / folder):
            for name in names:
                assert pydicom.dcmread(os.path.join(root, name)).PatientID == folder


def _coded(ds) -> list[tuple[str, str]]:
    names = ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "LongCodeValue")
    skip = ds.get("DeidentificationMethodCodeSequence")
    items = {id(item) for item in skip} if skip else set()
    found = []

    def walk(node):
        if id(node) in items:
            return
        for element in node:
            if element.VR == "SQ":
                for item in element.value:
                    walk(item)
            elif element.keyword in names:
                found.append((element.keyword, str(element.value)))

    walk(ds)
    return found


def test_the_sweep_leaves_codes_alone_but_cleans_code_meanings(tmp_path, run_cli):
    """test-SR.dcm: patient "Test^S R", and a coding scheme "TEST" that is not about the patient."""
    path = external.pydicom_file("test-SR.dcm")
    original = read(path)
    assert ("CodingSchemeDesignator", "TEST") in _coded(original)
    item = next(e for e in original.iterall() if e.keyword == "ConceptNameCodeSequence").value[0]
    item.CodeMeaning = "Reviewed with S R Test"  # free text naming the patient: still swept
    ds = copy.deepcopy(original)
    assert Deidentifier(make_policy())(ds).status == "ok"
    kept = _coded(ds)
    assert ("CodingSchemeDesignator", "TEST") in kept and set(kept) <= set(_coded(original))
    meanings = [str(e.value) for e in ds.iterall() if e.keyword == "CodeMeaning"]
    assert "Reviewed with S R [REDACTED]" in meanings and not any("Test" in m for m in meanings)
    # phi-scan, which knows the patient's names from the originals, does not report the code either.
    originals = tmp_path / "originals"
    originals.mkdir()
    original.save_as(originals / "sr.dcm")
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    assert run_cli("anonymize", originals, tmp_path / "out", "--secret-file", secret)[0] == 0
    status, out, _ = run_cli("phi-scan", tmp_path / "out", "--original", originals, "--limit", "0")
    assert status == 0 and "CodingSchemeDesignator" not in out and "original-identifier" not in out, out
