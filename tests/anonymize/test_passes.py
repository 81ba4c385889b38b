"""The passes on the sample series (a fictional patient planted everywhere) and on real files."""

from __future__ import annotations

import copy
import datetime as dt
import io
import os
import warnings

import _truth
import pydicom
import pytest
from _corpus import SAMPLE_IDENTIFIERS, SECRET, SERIES, pydicom_files, read
from _corpus import policy as make_policy

from medgan.anonymize import worker
from medgan.anonymize.passes import Deidentifier, PatientNotMapped
from medgan.anonymize.recipe import Policy, Recipe

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the odd test files

SAMPLE = sorted(str(p) for p in SERIES.glob("*.dcm"))


def deidentify(path, **recipe):
    """(original, de-identified read back from bytes, outcome) for one file."""
    original = read(path)
    ds = copy.deepcopy(original)
    outcome = Deidentifier(make_policy(**recipe))(ds)
    if outcome.status != "ok":
        return original, None, outcome
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return original, pydicom.dcmread(io.BytesIO(buffer.getvalue())), outcome


def all_values(ds) -> list[str]:
    out = []
    for part in (ds.file_meta, ds):
        for element in part.iterall():
            if element.VR != "SQ":
                out.append(str(element.value))
    return out


def test_sample_series_keeps_no_original_value_the_profile_removes():
    for path in SAMPLE[:3]:
        original, output, outcome = deidentify(path)
        assert outcome.status == "ok"
        assert _truth.left_values(original, output) == []
        assert not [e for e in output.iterall() if e.tag.is_private]
        assert not [e for e in output if 0x6000 <= e.tag.group <= 0x60FF]  # the whole overlay group
        text = "\n".join(all_values(output)).encode()
        for identifier in SAMPLE_IDENTIFIERS:
            assert identifier.lower() not in text.lower(), identifier
        assert output.PixelData == original.PixelData  # copied as bytes


def test_markers_list_the_profile_and_the_options():
    _, output, _ = deidentify(SAMPLE[0], clean_descriptors=True, retain_longitudinal="modified")
    assert output.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in output.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105", "113107"]
    assert all(item.CodingSchemeDesignator == "DCM" for item in output.DeidentificationMethodCodeSequence)
    assert "Basic Application Confidentiality Profile" in output.DeidentificationMethod
    assert output.LongitudinalTemporalInformationModified == "MODIFIED"


def test_uids_are_keyed_consistent_and_differ_with_another_secret():
    outputs = [deidentify(path)[1] for path in SAMPLE[:3]]
    originals = [read(path) for path in SAMPLE[:3]]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({str(o.get(keyword)) for o in outputs}) == 1
        assert str(outputs[0].get(keyword)).startswith("2.25.")
        assert outputs[0].get(keyword) != originals[0].get(keyword)
    for output in outputs:
        assert output.file_meta.MediaStorageSOPInstanceUID == output.SOPInstanceUID
        assert len(output.SOPInstanceUID) <= 64
    again = deidentify(SAMPLE[0])[1]
    assert again.SOPInstanceUID == outputs[0].SOPInstanceUID  # same secret, same UID, any run
    other = Deidentifier(Policy.from_recipe(Recipe(), b"another-secret-0123456789"))
    ds = read(SAMPLE[0])
    other(ds)
    assert ds.SOPInstanceUID != outputs[0].SOPInstanceUID
    assert outputs[0].PatientID == outputs[1].PatientID != ds.PatientID  # keyed pseudonym


def test_references_inside_sequences_follow_the_same_mapping():
    ds = read(SAMPLE[0])
    referenced = ds.SOPInstanceUID
    ds.SourceImageSequence = [pydicom.Dataset()]
    ds.SourceImageSequence[0].ReferencedSOPClassUID = ds.SOPClassUID
    ds.SourceImageSequence[0].ReferencedSOPInstanceUID = referenced
    target = read(SAMPLE[0])
    deid = Deidentifier(make_policy())
    deid(ds)
    deid(target)
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == target.SOPInstanceUID
    assert ds.SourceImageSequence[0].ReferencedSOPClassUID == target.SOPClassUID  # standard UIDs stay


@pytest.mark.parametrize(
    ("recipe", "keyword", "kept"),
    [
        ({}, "DeviceSerialNumber", False),
        ({"retain_device_identity": True}, "DeviceSerialNumber", True),
        ({"retain_device_identity": True}, "StationName", True),
        ({"retain_institution_identity": True}, "InstitutionName", True),
        ({}, "InstitutionName", False),
        ({"retain_patient_characteristics": True}, "PatientSex", True),
        ({"retain_patient_characteristics": True}, "PatientWeight", True),
        ({}, "PatientWeight", False),
        ({"retain_longitudinal": "full"}, "StudyDate", True),
        ({}, "StudyDate", False),
        ({"retain_uids": True}, "SOPInstanceUID", True),
    ],
)
def test_each_option_keeps_what_it_names(recipe, keyword, kept):
    original, output, _ = deidentify(SAMPLE[0], **recipe)
    assert original.get(keyword) not in (None, "")
    assert (output.get(keyword) == original.get(keyword)) is kept


def test_modified_dates_shift_every_date_of_a_patient_by_one_offset():
    pairs = [deidentify(path, retain_longitudinal="modified")[:2] for path in SAMPLE[:2]]
    offsets = set()
    for original, output in pairs:
        for keyword in ("StudyDate", "SeriesDate", "ContentDate"):
            before = dt.datetime.strptime(original.get(keyword), "%Y%m%d")
            after = dt.datetime.strptime(output.get(keyword), "%Y%m%d")
            offsets.add((after - before).days)
        assert output.StudyTime == original.StudyTime  # whole days: times of day stay
    (offset,) = offsets
    assert -3650 <= offset <= -1


def test_clean_descriptors_keeps_the_description_but_not_the_name_in_it():
    original, output, _ = deidentify(SAMPLE[0], clean_descriptors=True)
    assert "BRIGHTWATER" in original.StudyDescription
    assert output.StudyDescription.startswith("CT ABD W CONTRAST")
    assert "BRIGHTWATER" not in output.StudyDescription.upper() and "HARRIET" not in output.StudyDescription.upper()
    assert "[REDACTED]" in output.StudyDescription
    _, basic, _ = deidentify(SAMPLE[0])
    assert "StudyDescription" not in basic


def test_retain_safe_private_keeps_only_the_allow_list():
    safe = [{"creator": "RAVENBROOK PACS 1.0", "group": 0x0009, "element": 0x03}]
    original, output, _ = deidentify(SAMPLE[0], retain_safe_private=True, safe_private=safe)
    kept = {int(e.tag) for e in output if e.tag.is_private}
    present = {int(e.tag) for e in original if e.tag.is_private}
    assert 0x00091003 in present and 0x00091001 in present  # (0009,1001) holds the patient's name
    assert kept == {0x00090010, 0x00091003}  # the creator and the one allowed element


def test_pseudonyms_come_from_the_mapping_csv_or_fail():
    mapped = Policy.from_recipe(Recipe(), SECRET, {"RB4471902": "SUBJ-001"})
    ds = read(SAMPLE[0])
    assert Deidentifier(mapped)(ds).patient == "SUBJ-001"
    assert ds.PatientID == "SUBJ-001" and str(ds.PatientName) == "SUBJ-001"
    strict = Policy.from_recipe(Recipe(unmapped_patients="fail"), SECRET, {"someone-else": "SUBJ-002"})
    with pytest.raises(PatientNotMapped):
        Deidentifier(strict)(read(SAMPLE[0]))


def test_burned_in_text_is_quarantined_unless_a_region_blanks_it():
    ds = read(SAMPLE[0])
    ds.Modality = "US"
    del ds.BurnedInAnnotation
    assert Deidentifier(make_policy())(copy.deepcopy(ds)).status == "quarantined"
    ds.BurnedInAnnotation = "NO"
    assert Deidentifier(make_policy())(copy.deepcopy(ds)).status == "ok"
    ds.BurnedInAnnotation = "YES"
    outcome = Deidentifier(make_policy())(copy.deepcopy(ds))
    assert outcome.status == "quarantined" and "BurnedInAnnotation" in outcome.reason
    region = {"modality": "US", "manufacturer": "MEDGAN", "boxes": [[0, 0, 20, 10]]}
    blanked = copy.deepcopy(ds)
    outcome = Deidentifier(make_policy(pixel_regions=[region]))(blanked)
    assert outcome.status == "ok" and outcome.pixels_blanked
    before, after = ds.pixel_array, blanked.pixel_array
    assert (after[:10, :20] == 0).all() and (after[10:, :] == before[10:, :]).all()
    assert (after[:10, 20:] == before[:10, 20:]).all()
    assert blanked.BurnedInAnnotation == "NO"
    assert "113101" in [item.CodeValue for item in blanked.DeidentificationMethodCodeSequence]


def test_compressed_pixels_are_decoded_only_to_blank_them():
    path = pydicom.data.get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")
    ds = read(path)
    region = {"modality": ds.Modality, "boxes": [[0, 0, 5, 5]]}
    Deidentifier(make_policy(pixel_regions=[region]))(ds)
    assert not ds.file_meta.TransferSyntaxUID.is_compressed
    assert (ds.pixel_array[:5, :5] == 0).all() and ds.pixel_array[5:, 5:].any()


def test_real_files_keep_no_value_the_profile_removes_at_any_depth(tmp_path):
    """The pydicom test files (155): every output is clean; pixels are byte-identical."""
    worker.init_worker(make_policy(quarantine_burned_in=False))
    written = 0
    for path in pydicom_files():
        result = worker.process_file(path, None, "x", str(tmp_path))
        if result.status != "ok":
            assert result.status == "failed", (path, result)
            assert "truncated" in result.reason or "without Rows" in result.reason, (path, result)
            continue
        original, output = read(path), read(result.temp_paths[0])
        # By each attribute's own action (what the Basic Profile column says of that tag), as the
        # peers are scored; codes kept inside kept sequences are not identifiers.
        left = _truth.left_values(original, output, inherit=False)
        assert left == [], (os.path.basename(path), left[:3])
        assert output.PatientIdentityRemoved == "YES", path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if "PixelData" in original and "PixelData" in output:
                assert output.PixelData == original.PixelData, path
        os.remove(result.temp_paths[0])
        written += 1
    assert written >= 150
