"""The shipped sample data: exactly what sample_data/make_sample_data.py regenerates, small, readable,
and (the DICOM series) carrying the fictional identity that de-identification tests rely on."""

from __future__ import annotations

import filecmp
import importlib.util
import json
import os
import re
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from medgan.data.phantoms import make_phantom, render_phantom
from medgan.io import read_image
from medgan.io.geometry import spacing_mm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(REPO, "sample_data")
SERIES = os.path.join(SAMPLE, "dicom", "ct_series")
REGENERATE = "rerun `python sample_data/make_sample_data.py` if the change is intended"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_sample_data", os.path.join(SAMPLE, "make_sample_data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample_data")
    written = script.make_sample_data(str(out))
    return str(out), written


def test_script_writes_every_shipped_file_and_nothing_else(regenerated):
    _, written = regenerated
    shipped = {
        os.path.relpath(os.path.join(folder, name), SAMPLE)
        for folder, _, names in os.walk(SAMPLE)
        for name in names
        if not name.endswith((".py", ".md", ".pyc"))
    }
    assert set(written) == shipped, REGENERATE


@pytest.mark.parametrize("name", sorted(script.VOLUMES))
def test_shipped_volumes_equal_the_regenerated_ones(regenerated, name):
    out, _ = regenerated
    shipped, fresh = nib.load(os.path.join(SAMPLE, name)), nib.load(os.path.join(out, name))
    assert shipped.get_data_dtype() == fresh.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(shipped.dataobj), np.asanyarray(fresh.dataobj), err_msg=REGENERATE)
    np.testing.assert_array_equal(shipped.affine, fresh.affine)
    assert shipped.header["descrip"] == fresh.header["descrip"]
    sidecar = name.removesuffix(".nii.gz") + ".json"
    with open(os.path.join(SAMPLE, sidecar)) as a, open(os.path.join(out, sidecar)) as b:
        assert json.load(a) == json.load(b), REGENERATE


@pytest.mark.parametrize("name", sorted(script.VOLUMES))
def test_shipped_volumes_have_the_documented_geometry_and_replay_from_their_sidecar(name):
    cfg = script.VOLUMES[name]
    image = read_image(os.path.join(SAMPLE, name))
    assert tuple(image.shape[1:]) == tuple(cfg.shape)
    np.testing.assert_allclose(spacing_mm(np.asarray(image.affine))[: cfg.spatial_dims], cfg.spacing_mm)
    with open(os.path.join(SAMPLE, name.removesuffix(".nii.gz") + ".json")) as fh:
        sidecar = json.load(fh)
    assert image.meta["modality"] == sidecar["Modality"] == ("CT" if cfg.kind.startswith("ct") else "MR")
    replayed = render_phantom(sidecar["PhantomParams"])
    np.testing.assert_array_equal(replayed.numpy(), image.numpy())


_VERSION = re.compile(r"(medgan[ _])\d[\w.+-]*", re.IGNORECASE)


def _elements(ds: Dataset, path: str = "") -> dict[str, object]:
    """Every element as path -> value (sequences unrolled), medgan's version string masked."""
    found: dict[str, object] = {}
    for element in ds:
        key = f"{path}{element.tag}"
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                found.update(_elements(item, f"{key}[{index}]."))
            continue
        value = element.value
        if isinstance(value, str):
            value = _VERSION.sub(r"\1<version>", value)
        elif not isinstance(value, bytes | int | float) and value is not None:
            value = [str(v) for v in value] if hasattr(value, "__iter__") else str(value)
        found[key] = (element.VR, value)
    return found


def test_shipped_series_equals_the_regenerated_one(regenerated):
    out, _ = regenerated
    names = sorted(os.listdir(SERIES))
    assert names == sorted(os.listdir(os.path.join(out, "dicom", "ct_series")))
    for name in names:
        shipped = pydicom.dcmread(os.path.join(SERIES, name))
        fresh = pydicom.dcmread(os.path.join(out, "dicom", "ct_series", name))
        assert _elements(shipped.file_meta) == _elements(fresh.file_meta), f"{name}: {REGENERATE}"
        assert _elements(shipped) == _elements(fresh), f"{name}: {REGENERATE}"


def test_series_regeneration_is_byte_identical(regenerated, tmp_path):
    out, _ = regenerated
    again = tmp_path / "ct_series"
    names = script.write_fake_patient_series(str(again))
    first = os.path.join(out, "dicom", "ct_series")
    match, mismatch, errors = filecmp.cmpfiles(first, again, names, shallow=False)
    assert (mismatch, errors) == ([], []) and len(match) == len(names) > 0


def test_shipped_series_reads_back_with_its_geometry():
    cfg = script.DICOM_PHANTOM
    image = read_image(SERIES)
    assert tuple(image.shape) == (1, *cfg.shape)
    np.testing.assert_allclose(spacing_mm(np.asarray(image.affine)), cfg.spacing_mm)
    assert image.meta["modality"] == "CT"
    # The phantom's HU survive the trip through DICOM exactly, and so does its placement.
    expected = make_phantom(cfg)
    np.testing.assert_array_equal(image.numpy(), expected.numpy())
    np.testing.assert_allclose(np.asarray(image.affine), np.asarray(expected.affine), atol=1e-6)


PHI = (
    "PatientName", "PatientBirthDate", "PatientID", "OtherPatientIDs", "PatientAddress", "InstitutionName",
    "InstitutionAddress", "ReferringPhysicianName", "OperatorsName", "StationName", "DeviceSerialNumber",
    "AccessionNumber", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime",
    "ContentDate", "ContentTime", "StudyID", "StudyDescription", "ImageComments",
)  # fmt: skip


def test_shipped_series_carries_the_fictional_identity():
    files = [pydicom.dcmread(os.path.join(SERIES, name)) for name in sorted(os.listdir(SERIES))]
    assert 24 <= len(files) <= 32
    for ds in files:
        for keyword in PHI:
            assert str(ds.get(keyword, "") or "").strip(), f"{keyword} missing"
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.SyntheticData == "YES"
    assert len({ds.SOPInstanceUID for ds in files}) == len(files)
    assert len({(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID) for ds in files}) == 1
    ds = files[0]
    family = str(ds.PatientName).split("^")[0]
    assert family.upper() in ds.StudyDescription.upper() and family in ds.ImageComments
    block = ds.private_block(0x0009, script.PRIVATE_CREATOR)
    assert family.upper() in block[0x01].value and len([e for e in ds if e.tag.is_private]) >= 4
    assert ds.OtherPatientIDsSequence[0].PatientID
    assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID
    assert "Brightwater" in ds.RequestAttributesSequence[0].RequestedProcedureDescription
    nested = ds.ReferringPhysicianIdentificationSequence[0].PersonIdentificationCodeSequence[0]
    assert str(ds.ReferringPhysicianName).split("^")[0] in nested.CodeMeaning
    overlay = {tag: ds[0x60000000 | tag].value for tag in (0x0010, 0x0011, 0x0040, 0x0050, 0x0100, 0x0102)}
    assert overlay == {0x0010: ds.Rows, 0x0011: ds.Columns, 0x0040: "G", 0x0050: [1, 1], 0x0100: 1, 0x0102: 0}
    bits = np.unpackbits(np.frombuffer(ds[0x60003000].value, np.uint8), bitorder="little")
    assert bits.size == ds.Rows * ds.Columns and 0 < bits.sum() < bits.size // 4


def test_readme_lists_every_file_and_the_licence():
    with open(os.path.join(SAMPLE, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    for name in script.VOLUMES:
        assert f"`{name}`" in readme or f"`{name}` + `.json`" in readme, name
    assert "dicom/ct_series/" in readme and f"IM{len(os.listdir(SERIES)):05d}.dcm" in readme
    assert "Apache-2.0" in readme and "make_sample_data.py" in readme


def test_sample_data_is_small():
    total = sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(SAMPLE) for name in names)
    assert total < 4 * 2**20


@pytest.mark.external
@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed")
def test_dciodvfy_finds_no_errors_but_the_unknown_synthetic_data_tag():
    names = sorted(os.listdir(SERIES))
    for name in (names[0], names[-1]):
        result = subprocess.run(["dciodvfy", os.path.join(SERIES, name)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert all("0x0008,0x001c" in line for line in errors), errors
