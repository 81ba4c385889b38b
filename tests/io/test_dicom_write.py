"""DICOM series output, one file per slice: standard (dciodvfy), exact round trips, provenance, atomicity."""

from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest
from dicom_tools import GEOMETRIES, UID, affine, ct_volume, dciodvfy, files_in, read_all

import medgan.io.dicom_write as dicom_write
from medgan.errors import OutputError
from medgan.io import read_image, write_image
from medgan.io.dicom_encode import ds_text, encode_pixels
from medgan.io.dicom_write import write_dicom_series
from medgan.io.geometry import flip_lps_ras
from medgan.io.image import make_image

AFFINE_TOLERANCE_MM = 1e-3


def _every_string(ds: pydicom.Dataset) -> list[str]:
    """Every text value in a dataset, nested sequences included (to look for leaked identity)."""
    values = []
    for element in ds.iterall():
        if element.VR in ("SQ", "OB", "OW"):
            continue
        items = element.value if element.VM > 1 else [element.value]
        values += [str(v) for v in items]
    return values


# --- the standard ---------------------------------------------------------------------------


@pytest.mark.external
@pytest.mark.parametrize("modality", ["CT", "MR"])
@pytest.mark.parametrize("geometry", ["axial", "oblique", "tilted", "2d"])
def test_dciodvfy_finds_no_errors(tmp_path, modality, geometry):
    if geometry == "2d":
        image = ct_volume(shape=(24, 20, 1), modality=modality)[..., 0]
    else:
        image = ct_volume(geometry=geometry, modality=modality)
    folder = write_dicom_series(image, tmp_path / "out")
    for path in files_in(folder)[:: max(1, len(files_in(folder)) - 1)]:  # first and last slice
        verdict = dciodvfy(path)
        assert verdict.iod == f"{modality}Image", verdict.lines
        assert verdict.errors == [], verdict.lines


@pytest.mark.external
@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_dciodvfy_accepts_source_references_and_real_values(tmp_path, modality):
    source = write_dicom_series(ct_volume(modality=modality), tmp_path / "source")
    derived = read_image(source).float() * 0.37 + 0.1  # real values: rescale needed, MR included
    folder = write_dicom_series(derived, tmp_path / "derived", synthetic=True)
    verdict = dciodvfy(files_in(folder)[3])
    assert verdict.errors == [], verdict.lines
    assert "SourceImageSequence" in pydicom.dcmread(files_in(folder)[3])


@pytest.mark.external
def test_dciodvfy_check_catches_a_broken_file(tmp_path):
    """The validator wrapper must report real errors, not only pass everything."""
    folder = write_dicom_series(ct_volume(), tmp_path / "out")
    ds = pydicom.dcmread(files_in(folder)[0])
    del ds.Modality  # Type 1 in General Series
    ds.PhotometricInterpretation = "RGB"  # CT Image: MONOCHROME only
    ds.save_as(tmp_path / "broken.dcm")
    verdict = dciodvfy(tmp_path / "broken.dcm")
    assert any("Modality" in line for line in verdict.errors), verdict.lines
    assert any("Photometric" in line for line in verdict.errors), verdict.lines


def test_ct_and_mr_modules(tmp_path):
    ct = read_all(write_dicom_series(ct_volume(), tmp_path / "ct"))[0]
    assert ct.SOPClassUID == pydicom.uid.CTImageStorage
    assert list(ct.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert ct.RescaleType == "HU" and ct.RescaleSlope == 1 and ct.RescaleIntercept == 0
    assert ct.PixelRepresentation == 1 and ct.BitsStored == 16
    mr = read_all(write_dicom_series(ct_volume(modality="MR"), tmp_path / "mr"))[0]
    assert mr.SOPClassUID == pydicom.uid.MRImageStorage
    assert mr.ScanningSequence == "RM" and mr.MRAcquisitionType == "3D"
    assert "RescaleSlope" not in mr  # integer MR needs none; the MR Image IOD has no Modality LUT
    assert float(mr.SpacingBetweenSlices) == pytest.approx(2.5)


# --- geometry and values round trip ---------------------------------------------------------


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_int16_round_trip_is_exact(tmp_path, geometry):
    image = ct_volume(geometry=geometry)
    back = read_image(write_dicom_series(image, tmp_path / "out"))
    assert back.dtype == image.dtype
    np.testing.assert_array_equal(back.numpy(), image.numpy())
    assert int(back.min()) == -1024
    np.testing.assert_allclose(back.affine.numpy(), GEOMETRIES[geometry], atol=AFFINE_TOLERANCE_MM)


def test_positions_orientation_spacing_and_thickness(tmp_path):
    image = ct_volume(geometry="oblique")
    lps = flip_lps_ras(GEOMETRIES["oblique"])
    slices = read_all(write_dicom_series(image, tmp_path / "out"))
    for k, ds in enumerate(slices):
        assert ds.InstanceNumber == k + 1
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], lps[:3, 3] + k * lps[:3, 2], atol=1e-9)
    iop = np.array([float(v) for v in slices[0].ImageOrientationPatient])
    np.testing.assert_allclose(iop[:3], lps[:3, 0] / 0.7, atol=1e-12)
    np.testing.assert_allclose(iop[3:], lps[:3, 1] / 0.8, atol=1e-12)
    assert [float(v) for v in slices[0].PixelSpacing] == [0.8, 0.7]  # (between rows, between columns)
    assert float(slices[0].SliceThickness) == pytest.approx(2.5)


def test_gantry_tilt_is_kept_in_positions_and_named_for_ct(tmp_path):
    tilted = ct_volume(geometry="tilted")  # the step leans 15 degrees toward RAS +y, i.e. LPS -y
    ct = read_all(write_dicom_series(tilted, tmp_path / "ct"))
    # medgan's sign: positive when the step leans along the column direction (here LPS +y)
    assert [float(v) for v in ct[0].ImageOrientationPatient][3:] == [0, 1, 0]
    assert float(ct[0].GantryDetectorTilt) == pytest.approx(-15.0)
    assert float(ct[0].SliceThickness) == pytest.approx(2.5)  # along the normal, not along the step
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in ct])
    np.testing.assert_allclose(np.diff(positions, axis=0), [[0, -2.5 * np.tan(np.radians(15)), 2.5]] * 6, atol=1e-9)
    mr = read_all(write_dicom_series(ct_volume(geometry="tilted", modality="MR"), tmp_path / "mr"))[0]
    assert "GantryDetectorTilt" not in mr  # a CT attribute
    assert "GantryDetectorTilt" not in read_all(write_dicom_series(ct_volume(), tmp_path / "plain"))[0]
    oblique = read_all(write_dicom_series(ct_volume(geometry="oblique"), tmp_path / "oblique"))[0]
    assert "GantryDetectorTilt" not in oblique  # rotated, not sheared


def test_two_dimensional_image(tmp_path):
    image = ct_volume(shape=(24, 20, 1))[..., 0]
    folder = write_dicom_series(image, tmp_path / "out")
    assert len(files_in(folder)) == 1
    back = read_image(folder)
    assert tuple(back.shape) == (1, 24, 20, 1)
    np.testing.assert_array_equal(back.numpy()[..., 0], image.numpy())
    np.testing.assert_allclose(back.affine.numpy(), GEOMETRIES["axial"], atol=AFFINE_TOLERANCE_MM)


def test_large_coordinates_and_many_slices_keep_positions_exact(tmp_path):
    step = np.array([0.0131, -0.0217, 0.6123456789])  # slightly sheared, irrational-looking step
    grid = affine(spacing_mm=(0.4883, 0.4883, 1.0), origin_mm=(-98765.4321, 87654.321, -76543.21))
    grid[:3, 2] = step
    data = (np.arange(4 * 3 * 150, dtype=np.int16).reshape(1, 4, 3, 150) % 2000) - 1000
    image = make_image(data, grid, {"modality": "CT"})
    folder = write_dicom_series(image, tmp_path / "out")
    lps = flip_lps_ras(grid)
    last = pydicom.dcmread(files_in(folder)[-1])
    np.testing.assert_allclose(
        [float(v) for v in last.ImagePositionPatient], lps[:3, 3] + 149 * lps[:3, 2], atol=1e-7, rtol=0
    )
    assert all(len(str(v)) <= 16 for v in last.ImagePositionPatient)
    back = read_image(folder)
    np.testing.assert_array_equal(back.numpy(), data)
    np.testing.assert_allclose(back.affine.numpy(), grid, atol=AFFINE_TOLERANCE_MM, rtol=0)


def test_left_handed_affine_reads_back_reversed_but_in_the_same_place(tmp_path):
    grid = affine(spacing_mm=(0.7, -0.8, 2.5))  # slice step against row x column
    image = make_image(ct_volume().numpy(), grid, {"modality": "CT"})
    back = read_image(write_dicom_series(image, tmp_path / "out"))
    np.testing.assert_array_equal(back.numpy(), image.numpy()[..., ::-1])
    expected = grid.copy()
    expected[:3, 3] += 6 * grid[:3, 2]
    expected[:3, 2] *= -1
    np.testing.assert_allclose(back.affine.numpy(), expected, atol=AFFINE_TOLERANCE_MM)


def test_real_values_round_trip_within_half_a_step(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(40.0, 300.0, size=(1, 24, 20, 7)).astype(np.float32)
    image = make_image(data, GEOMETRIES["oblique"], {"modality": "CT"})
    folder = write_dicom_series(image, tmp_path / "out")
    slope = float(pydicom.dcmread(files_in(folder)[0]).RescaleSlope)
    assert 0 < slope <= (data.max() - data.min()) / 65535 * (1 + 1e-9)
    back = read_image(folder)
    error = np.abs(back.numpy().astype(np.float64) - data)
    assert error.max() <= slope / 2 + 1e-4 * np.abs(data).max() * 2**-10  # + float32 rounding


@pytest.mark.parametrize(
    ("values", "exact"),
    [
        (np.array([-32768, 0, 32767]), True),
        (np.array([0, 40000, 65535]), True),  # uint16 range: exact through the intercept
        (np.array([-100000, 0, 100000]), False),  # wider than 16 bits: quantised
        (np.array([0.0, 2.5e-12, 1e-11]), False),  # a tiny range must not give a zero slope
        (np.array([1234567.125, 1234567.25]), False),
    ],
)
def test_encode_pixels_recovers_values(values, exact):
    stored, encoding = encode_pixels(values)
    assert stored.dtype in (np.int16, np.uint16) and encoding.slope > 0
    decoded = stored * float(ds_text(encoding.slope)) + float(ds_text(encoding.intercept))
    if exact:
        assert encoding.exact
        np.testing.assert_array_equal(decoded, values)
    else:
        np.testing.assert_allclose(decoded, values, atol=encoding.slope / 2 * (1 + 1e-6), rtol=0)


@pytest.mark.parametrize(
    "value", [0.0, -0.0, 0.7000000000000001, -98765.43210987654, 1e-17, 1.5e-11, 123456789012.345, -1 / 3]
)
def test_ds_text_is_short_and_close(value):
    text = ds_text(value)
    assert len(text) <= 16 and text != "-0"
    assert float(text) == pytest.approx(value, rel=1e-10, abs=0)
    assert (float(text) == 0) == (value == 0)


# --- provenance and identity ----------------------------------------------------------------


def test_derived_and_synthetic_marks(tmp_path):
    plain = read_all(write_dicom_series(ct_volume(), tmp_path / "plain"))[0]
    assert plain.SyntheticData == "NO"
    assert list(plain.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert plain.DerivationDescription.startswith("written by medgan")
    assert plain.DerivationCodeSequence[0].CodeValue == "110001"
    assert plain.ContributingEquipmentSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    generated = read_all(write_dicom_series(ct_volume(synthetic=True), tmp_path / "generated"))[0]
    assert generated.SyntheticData == "YES"
    assert generated.DerivationDescription.startswith("generated by medgan")
    assert generated.DerivationCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert generated.ContributingEquipmentSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109100"
    assert generated.SeriesDescription.startswith("SYNTHETIC")
    overridden = read_all(write_dicom_series(ct_volume(synthetic=True), tmp_path / "no", synthetic=False))[0]
    assert overridden.SyntheticData == "NO"
    forced = read_all(write_dicom_series(ct_volume(), tmp_path / "yes", synthetic=True))[0]
    assert forced.SyntheticData == "YES"


def _source_with_identity(tmp_path):
    """A DICOM series whose patient and descriptions carry identity, read back as a MetaTensor."""
    folder = write_dicom_series(ct_volume(), tmp_path / "source")
    for path in files_in(folder):
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "MRN-12345", "19700101"
        ds.PatientSex, ds.PatientAge = "F", "054Y"
        ds.StudyDescription = "Doe chest follow-up"
        ds.SeriesDescription = "Jane Doe thorax 1mm"
        ds.BodyPartExamined = "CHEST"
        ds.save_as(path)
    return read_image(folder)


def test_patient_identity_is_not_copied_unless_asked(tmp_path):
    source = _source_with_identity(tmp_path)
    assert source.meta["patient"]["PatientName"] == "Doe^Jane"
    for ds in read_all(write_dicom_series(source, tmp_path / "anonymous")):
        assert ds.PatientName == "" and ds.PatientID == "" and ds.PatientBirthDate == "" and ds.PatientSex == ""
        leaked = [v for v in _every_string(ds) if any(s in v for s in ("Doe", "Jane", "MRN-12345", "19700101"))]
        assert leaked == []
        assert ds.BodyPartExamined == "CHEST"  # not identifying, kept


def test_patient_identity_is_copied_when_asked(tmp_path):
    source = _source_with_identity(tmp_path)
    ds = read_all(write_dicom_series(source, tmp_path / "identified", copy_patient=True))[0]
    assert (ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex, ds.PatientAge) == (
        "Doe^Jane",
        "MRN-12345",
        "19700101",
        "F",
        "054Y",
    )
    assert ds.StudyDescription == "Doe chest follow-up"
    assert "Jane Doe thorax" in ds.SeriesDescription


def test_source_image_sequence_references_each_source_slice(tmp_path):
    source_folder = write_dicom_series(ct_volume(geometry="oblique"), tmp_path / "source")
    source = {ds.SOPInstanceUID: ds for ds in read_all(source_folder)}
    derived = read_all(write_dicom_series(read_image(source_folder), tmp_path / "derived"))
    for ds in derived:
        (ref,) = ds.SourceImageSequence
        assert ref.ReferencedSOPClassUID == pydicom.uid.CTImageStorage
        assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        assert ref.ReferencedSOPInstanceUID in source
        assert ref.ReferencedSOPInstanceUID != ds.SOPInstanceUID
        # the referenced slice lies where this one does
        referenced = source[ref.ReferencedSOPInstanceUID]
        np.testing.assert_allclose(
            [float(v) for v in referenced.ImagePositionPatient], [float(v) for v in ds.ImagePositionPatient], atol=1e-6
        )
        assert ds.DerivationDescription == "written by medgan 0.1.0 from a DICOM image"


def test_changed_slice_count_references_every_source(tmp_path):
    source = read_image(write_dicom_series(ct_volume(), tmp_path / "source"))
    cropped = source[..., 2:5]
    derived = read_all(write_dicom_series(cropped, tmp_path / "derived"))
    assert len(derived) == 3
    assert all(len(ds.SourceImageSequence) == 7 for ds in derived)


def test_no_source_no_source_image_sequence(tmp_path):
    assert "SourceImageSequence" not in read_all(write_dicom_series(ct_volume(), tmp_path / "out"))[0]


def test_uids_are_new_valid_and_shared_where_they_should_be(tmp_path):
    source_folder = write_dicom_series(ct_volume(), tmp_path / "source")
    source = read_all(source_folder)
    slices = read_all(write_dicom_series(read_image(source_folder), tmp_path / "out"))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(getattr(ds, keyword)) for ds in slices}
        assert len(values) == 1, keyword
        assert values.isdisjoint(str(getattr(ds, keyword)) for ds in source), keyword
    sop = [str(ds.SOPInstanceUID) for ds in slices]
    assert len(set(sop)) == len(sop)
    assert set(sop).isdisjoint(str(ds.SOPInstanceUID) for ds in source)
    for ds in slices:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.SOPInstanceUID):
            assert len(uid) <= 64 and UID.match(uid), uid


# --- refusals and atomicity -----------------------------------------------------------------


def test_refuses_what_dicom_cannot_hold(tmp_path):
    data, grid, ct = ct_volume().numpy(), GEOMETRIES["axial"], {"modality": "CT"}
    with pytest.raises(OutputError, match="modality"):
        write_dicom_series(make_image(data, grid, {}), tmp_path / "a")
    with pytest.raises(OutputError, match="one channel"):
        write_dicom_series(make_image(np.repeat(data, 2, 0), grid, ct), tmp_path / "b")
    skewed = grid.copy()
    skewed[0, 1] = 0.3
    with pytest.raises(OutputError, match="not orthogonal"):
        write_dicom_series(make_image(data, skewed, ct), tmp_path / "c")
    with pytest.raises(OutputError, match="NaN"):
        write_dicom_series(make_image(np.full((1, 4, 4, 2), np.nan), grid, ct), tmp_path / "d")
    assert os.listdir(tmp_path) == []


def test_failure_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    real = dicom_write._slice_dataset

    def fail_at_slice_four(plan, k):
        if k == 3:
            raise OSError("disk full")
        return real(plan, k)

    monkeypatch.setattr(dicom_write, "_slice_dataset", fail_at_slice_four)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(ct_volume(), tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_the_old_series(tmp_path, monkeypatch):
    old = write_dicom_series(ct_volume(), tmp_path / "out")
    before = {name: os.path.getsize(os.path.join(old, name)) for name in os.listdir(old)}

    def fail(ds, path):
        raise OSError("disk full")

    monkeypatch.setattr(dicom_write, "save_dataset", fail)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(ct_volume(shape=(8, 8, 3)), old, overwrite=True)
    assert {name: os.path.getsize(os.path.join(old, name)) for name in os.listdir(old)} == before
    assert os.listdir(tmp_path) == ["out"]


def test_existing_folder_needs_overwrite(tmp_path):
    folder = write_dicom_series(ct_volume(), tmp_path / "out")
    with pytest.raises(OutputError, match="already exists"):
        write_dicom_series(ct_volume(), folder)
    write_dicom_series(ct_volume(shape=(8, 8, 3)), folder, overwrite=True)
    assert len(files_in(folder)) == 3


def test_write_image_passes_dicom_options(tmp_path):
    folder = write_image(ct_volume(modality=""), tmp_path / "out", to="dicom", modality="MR", synthetic=True)
    ds = read_all(folder)[0]
    assert ds.Modality == "MR" and ds.SyntheticData == "YES"
