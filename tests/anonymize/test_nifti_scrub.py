"""NIfTI: header text fields and extensions cleared, voxels byte-identical, sidecars scrubbed, names keyed."""

from __future__ import annotations

import gzip
import json
import struct

import nibabel as nib
import numpy as np
import pytest
from _corpus import SECRET
from nibabel.nifti1 import Nifti1Extension

from medgan.anonymize.batch import anonymize_tree, input_id, read_report
from medgan.anonymize.nifti import scrub_sidecar
from medgan.anonymize.recipe import Policy, Recipe
from medgan.anonymize.verify import phi_scan

SIDECAR = {
    "Modality": "MR",
    "PatientName": "Brightwater^Harriet",
    "PatientID": "RB4471902",
    "PatientBirthDate": "19560214",
    "AcquisitionDateTime": "2024-03-15T10:00:00",
    "DeviceSerialNumber": "SN-99871",
    "InstitutionName": "Ravenbrook General Hospital",
    "StudyInstanceUID": "1.2.3.4.5",
    "DateOfBirth": "1956-02-14",
    "RepetitionTime": 2.3,
    "ImageComments": "Brightwater, follow-up",
    "SeriesDescription": "T1 MPRAGE for RB4471902",
    "TaskName": "rest",
}


def make_nifti(path, version=1):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    klass = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    image = klass(data, np.diag([1.5, 1.5, 2.0, 1.0]))
    header = image.header
    header["descrip"] = b"Brightwater^Harriet 19560214"
    header["aux_file"] = b"RB4471902"
    header["intent_name"] = b"Harriet"
    if version == 1:
        header["db_name"] = b"RAVENBROOK"
    header.extensions.append(Nifti1Extension(6, b"PatientName=Brightwater^Harriet"))  # a comment extension
    nib.save(image, path)
    return data


def voxel_bytes(path) -> bytes:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    # vox_offset read straight from the bytes (NIfTI-1: float32 at 108; NIfTI-2: int64 at 168)
    offset = (
        int(struct.unpack("<f", raw[108:112])[0])
        if raw[:4] == b"\x5c\x01\0\0"
        else struct.unpack("<q", raw[168:176])[0]
    )
    return raw[offset:]


@pytest.mark.parametrize(("name", "version"), [("Brightwater_T1.nii.gz", 1), ("RB4471902.nii", 2)])
def test_nifti_is_scrubbed_and_renamed(tmp_path, name, version):
    source = tmp_path / "in"
    source.mkdir()
    data = make_nifti(source / name, version)
    (source / name.replace(".nii.gz", ".json").replace(".nii", ".json")).write_text(json.dumps(SIDECAR))
    summary = anonymize_tree(str(source), str(tmp_path / "out"), Policy.from_recipe(Recipe(), SECRET))
    assert (summary.ok, summary.failed) == (1, 0)  # the sidecar travels with its image: one input
    (row,) = read_report(str(tmp_path / "out" / "report.csv"))
    image_path, sidecar_path = row["output"].split(";")
    key = input_id(SECRET, name)
    assert image_path.startswith(f"nifti/{key}.nii") and sidecar_path == f"nifti/{key}.json"
    written = tmp_path / "out" / image_path
    header = nib.load(written).header
    for field in ("descrip", "aux_file", "intent_name") + (("db_name",) if version == 1 else ()):
        assert bytes(header[field]).strip(b"\0") == b"", field
    assert len(header.extensions) == 0
    assert voxel_bytes(written) == voxel_bytes(source / name)  # copied, not re-encoded
    assert np.array_equal(np.asarray(nib.load(written).dataobj), data)
    sidecar = json.loads((tmp_path / "out" / sidecar_path).read_text())
    assert set(sidecar) == {"Modality", "RepetitionTime", "TaskName"}
    raw = b"".join(p.read_bytes().lower() for p in (tmp_path / "out" / "nifti").iterdir())
    for identifier in (b"brightwater", b"rb4471902", b"harriet", b"19560214", b"ravenbrook"):
        assert identifier not in raw
    assert phi_scan(str(tmp_path / "out")) == ([], 2)


def test_sidecar_options_and_sweep():
    kept = scrub_sidecar(SIDECAR, Policy.from_recipe(Recipe(retain_device_identity=True), SECRET))
    assert kept["DeviceSerialNumber"] == "SN-99871" and "PatientName" not in kept
    nested = scrub_sidecar(
        {"Extra": {"Note": "seen by Brightwater"}, "PatientName": "Brightwater^H"},
        None or Policy.from_recipe(Recipe(), SECRET),
    )
    assert nested == {"Extra": {"Note": "seen by [REDACTED]"}}


def test_phi_scan_flags_an_unscrubbed_nifti(tmp_path, run_cli):
    make_nifti(tmp_path / "raw.nii")
    (tmp_path / "raw.json").write_text(json.dumps(SIDECAR))
    status, out, _ = run_cli("phi-scan", tmp_path)
    assert status == 1
    assert "descrip: not empty" in out and "extensions" in out and "JSON key PatientName" in out
    assert "Brightwater" not in out  # findings never quote values
