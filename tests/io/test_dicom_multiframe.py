"""Enhanced CT/MR multi-frame output: standard (dciodvfy), functional groups, round trips, other readers."""

from __future__ import annotations

import glob
import os
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_tools import GEOMETRIES, UID, ct_volume, dciodvfy, external_tool, files_in
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from pydicom.tag import Tag

import medgan.io.dicom_write as dicom_write
from medgan.io import read_image
from medgan.io.dicom_write import write_dicom_series
from medgan.io.geometry import flip_lps_ras
from medgan.io.image import make_image

AFFINE_TOLERANCE_MM = 1e-3


def write_multiframe(image, folder, **options) -> pydicom.Dataset:
    written = write_dicom_series(image, folder, multiframe=True, **options)
    assert os.listdir(written) == ["IM00001.dcm"]
    return pydicom.dcmread(os.path.join(written, "IM00001.dcm"))


@pytest.mark.external
@pytest.mark.parametrize("modality", ["CT", "MR"])
@pytest.mark.parametrize("geometry", ["axial", "oblique", "tilted", "2d"])
def test_dciodvfy_finds_no_errors(tmp_path, modality, geometry):
    if geometry == "2d":
        image = ct_volume(shape=(24, 20, 1), modality=modality)[..., 0]
    else:
        image = ct_volume(geometry=geometry, modality=modality)
    write_multiframe(image, tmp_path / "out")
    verdict = dciodvfy(tmp_path / "out" / "IM00001.dcm")
    assert verdict.iod == f"Enhanced{modality}Image", verdict.lines
    assert verdict.errors == [], verdict.lines


@pytest.mark.external
@pytest.mark.parametrize("modality", ["CT", "MR"])
@pytest.mark.parametrize("source_layout", ["single", "multi"])
def test_dciodvfy_accepts_source_references(tmp_path, modality, source_layout):
    source = write_dicom_series(ct_volume(modality=modality), tmp_path / "source", multiframe=source_layout == "multi")
    derived = read_image(source).float() * 0.5 + 0.25
    write_multiframe(derived, tmp_path / "derived", synthetic=True)
    verdict = dciodvfy(tmp_path / "derived" / "IM00001.dcm")
    assert verdict.errors == [], verdict.lines
    # the same with a changed slice count: every frame derives from every source
    write_multiframe(read_image(source)[..., 1:4], tmp_path / "cropped")
    verdict = dciodvfy(tmp_path / "cropped" / "IM00001.dcm")
    assert verdict.errors == [], verdict.lines


@pytest.mark.parametrize("modality", ["CT", "MR"])
@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_round_trip_through_medgan_reader_is_exact(tmp_path, modality, geometry):
    image = ct_volume(geometry=geometry, modality=modality)
    write_multiframe(image, tmp_path / "out")
    back = read_image(tmp_path / "out")
    assert back.dtype == image.dtype
    np.testing.assert_array_equal(back.numpy(), image.numpy())
    np.testing.assert_allclose(back.affine.numpy(), GEOMETRIES[geometry], atol=AFFINE_TOLERANCE_MM)
    assert back.meta["modality"] == modality


def test_real_values_round_trip_within_half_a_step(tmp_path):
    data = np.random.default_rng(1).normal(0.0, 50.0, size=(1, 24, 20, 7)).astype(np.float32)
    ds = write_multiframe(make_image(data, GEOMETRIES["oblique"], {"modality": "MR"}), tmp_path / "out")
    rescale = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    slope = float(rescale.RescaleSlope)
    assert rescale.RescaleType == "US" and 0 < slope < 1
    back = read_image(tmp_path / "out").numpy().astype(np.float64)
    assert np.abs(back - data).max() <= slope / 2 * (1 + 1e-3)


def test_enhanced_ct_structure(tmp_path):
    image = ct_volume(geometry="tilted")
    ds = write_multiframe(image, tmp_path / "out")
    lps = flip_lps_ras(GEOMETRIES["tilted"])
    assert ds.SOPClassUID == pydicom.uid.EnhancedCTImageStorage
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert ds.NumberOfFrames == 7 and (ds.Rows, ds.Columns) == (20, 24)
    assert list(ds.ImageType) == ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    shared = ds.SharedFunctionalGroupsSequence[0]
    measures = shared.PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == [0.8, 0.7]
    assert float(measures.SliceThickness) == pytest.approx(2.5)  # perpendicular, despite the tilt
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    rescale = shared.PixelValueTransformationSequence[0]
    assert (float(rescale.RescaleSlope), float(rescale.RescaleIntercept), rescale.RescaleType) == (1, 0, "HU")
    assert "WindowCenter" in shared.FrameVOILUTSequence[0]
    assert list(shared.CTImageFrameTypeSequence[0].FrameType) == list(ds.ImageType)
    assert UID.match(shared.IrradiationEventIdentificationSequence[0].IrradiationEventUID)
    assert shared.FrameAnatomySequence[0].FrameLaterality == "U"
    assert len(ds.PerFrameFunctionalGroupsSequence) == 7
    for k, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, lps[:3, 3] + k * lps[:3, 2], atol=1e-9)  # sheared: per frame
        content = frame.FrameContentSequence[0]
        assert content.DimensionIndexValues == k + 1  # one dimension: a single value
        assert content.InStackPositionNumber == k + 1 and content.StackID == "1"
        assert "DerivationImageSequence" not in frame  # no source image
    (dimension,) = ds.DimensionIndexSequence
    assert dimension.DimensionIndexPointer == Tag("ImagePositionPatient")
    assert dimension.FunctionalGroupPointer == Tag("PlanePositionSequence")
    assert dimension.DimensionOrganizationUID == ds.DimensionOrganizationSequence[0].DimensionOrganizationUID
    np.testing.assert_array_equal(ds.pixel_array.transpose(2, 1, 0), image.numpy()[0])  # frames = slices


def test_enhanced_mr_structure(tmp_path):
    ds = write_multiframe(ct_volume(modality="MR"), tmp_path / "out")
    assert ds.SOPClassUID == pydicom.uid.EnhancedMRImageStorage
    frame_type = ds.SharedFunctionalGroupsSequence[0].MRImageFrameTypeSequence[0]
    assert frame_type.ComplexImageComponent == "MAGNITUDE" and frame_type.AcquisitionContrast == "UNKNOWN"
    assert ds.ApplicableSafetyStandardAgency == "IEC"
    assert "IrradiationEventIdentificationSequence" not in ds.SharedFunctionalGroupsSequence[0]


def test_body_part_names_the_frame_anatomy(tmp_path):
    source = write_dicom_series(ct_volume(), tmp_path / "source")
    for path in files_in(source):
        ds = pydicom.dcmread(path)
        ds.BodyPartExamined = "HEAD"
        ds.save_as(path)
    ds = write_multiframe(read_image(source), tmp_path / "head")
    region = ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].AnatomicRegionSequence[0]
    assert (region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning) == ("69536005", "SCT", "Head")
    unknown = write_multiframe(ct_volume(), tmp_path / "unknown")
    region = unknown.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].AnatomicRegionSequence[0]
    assert region.CodeValue == "123037004"  # "Body structure": anatomy unspecified


def test_provenance_identity_and_uids(tmp_path):
    image = ct_volume(synthetic=True)
    image.meta["patient"] = {"PatientName": "Doe^Jane", "PatientID": "MRN-12345"}
    anonymous = write_multiframe(image, tmp_path / "anonymous")
    assert anonymous.SyntheticData == "YES"
    assert anonymous.PatientName == "" and anonymous.PatientID == ""
    text = " ".join(str(e.value) for e in anonymous.iterall() if e.VR not in ("SQ", "OB", "OW"))
    assert "Doe" not in text and "MRN-12345" not in text
    contribution = anonymous.ContributingEquipmentSequence[0]
    assert contribution.ContributionDescription.startswith("generated by medgan")  # the derivation text
    assert contribution.PurposeOfReferenceCodeSequence[0].CodeMeaning == "Synthesizing Equipment"
    identified = write_multiframe(image, tmp_path / "identified", copy_patient=True, synthetic=False)
    assert identified.PatientName == "Doe^Jane" and identified.PatientID == "MRN-12345"
    assert identified.SyntheticData == "NO"
    uids = [anonymous.StudyInstanceUID, anonymous.SeriesInstanceUID, anonymous.SOPInstanceUID]
    uids += [anonymous.FrameOfReferenceUID, anonymous.DimensionOrganizationSequence[0].DimensionOrganizationUID]
    uids += [identified.StudyInstanceUID, identified.SeriesInstanceUID, identified.SOPInstanceUID]
    assert len(set(uids)) == len(uids)
    assert all(len(uid) <= 64 and UID.match(uid) for uid in uids)


def test_frames_reference_their_source_slices(tmp_path):
    source_folder = write_dicom_series(ct_volume(geometry="oblique"), tmp_path / "source")
    source = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, files_in(source_folder))}
    some = next(iter(source.values()))
    ds = write_multiframe(read_image(source_folder), tmp_path / "derived")
    for frame in ds.PerFrameFunctionalGroupsSequence:
        (derivation,) = frame.DerivationImageSequence
        assert derivation.DerivationDescription == "written by medgan 0.1.0 from a DICOM image"
        assert derivation.DerivationCodeSequence[0].CodeValue == "110001"
        (ref,) = derivation.SourceImageSequence
        assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        referenced = [float(v) for v in source[ref.ReferencedSOPInstanceUID].ImagePositionPatient]
        np.testing.assert_allclose(position, referenced, atol=1e-6)
    (study,) = ds.SourceImageEvidenceSequence
    assert study.StudyInstanceUID == some.StudyInstanceUID != ds.StudyInstanceUID
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == some.SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in series.ReferencedSOPSequence} == set(source)
    other = ds.StudiesContainingOtherReferencedInstancesSequence[0].ReferencedSeriesSequence[0]
    assert {item.ReferencedSOPInstanceUID for item in other.ReferencedInstanceSequence} == set(source)


def test_frames_of_a_multiframe_source_are_referenced_by_number(tmp_path):
    write_multiframe(ct_volume(), tmp_path / "source")
    ds = write_multiframe(read_image(tmp_path / "source"), tmp_path / "derived")
    numbers = [
        frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber
        for frame in ds.PerFrameFunctionalGroupsSequence
    ]
    assert numbers == list(range(1, 8))


def test_a_changed_slice_count_puts_every_source_in_the_shared_group(tmp_path):
    source = write_dicom_series(ct_volume(), tmp_path / "source")
    ds = write_multiframe(read_image(source)[..., 2:5], tmp_path / "cropped")
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert len(shared.DerivationImageSequence[0].SourceImageSequence) == 7
    assert all("DerivationImageSequence" not in frame for frame in ds.PerFrameFunctionalGroupsSequence)


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def fail(ds, path):
        raise OSError("disk full")

    monkeypatch.setattr(dicom_write, "save_dataset", fail)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(ct_volume(), tmp_path / "out", multiframe=True)
    assert os.listdir(tmp_path) == []


def test_simpleitk_reads_the_same_volume(tmp_path):
    image = ct_volume(geometry="oblique")
    write_multiframe(image, tmp_path / "out")
    itk = sitk.ReadImage(str(tmp_path / "out" / "IM00001.dcm"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(itk).transpose(2, 1, 0), image.numpy()[0])
    lps = flip_lps_ras(GEOMETRIES["oblique"])
    np.testing.assert_allclose(itk.GetOrigin(), lps[:3, 3], atol=AFFINE_TOLERANCE_MM)
    np.testing.assert_allclose(itk.GetSpacing(), [0.7, 0.8, 2.5], atol=AFFINE_TOLERANCE_MM)
    np.testing.assert_allclose(np.reshape(itk.GetDirection(), (3, 3)), lps[:3, :3] / [0.7, 0.8, 2.5], atol=1e-6)


def _dcm2niix(folder, out) -> tuple[np.ndarray, np.ndarray]:
    """Convert with dcm2niix; returns the first NIfTI's voxels and affine."""
    tool = external_tool("dcm2niix")
    os.makedirs(out)
    result = subprocess.run(
        [tool, "-z", "n", "-f", "volume", "-o", str(out), str(folder)], capture_output=True, text=True
    )
    converted = sorted(glob.glob(os.path.join(out, "volume*.nii")))
    assert result.returncode == 0 and converted, result.stdout + result.stderr
    nifti = nib.load(converted[0])
    return np.asanyarray(nifti.dataobj), nifti.affine


@pytest.mark.external
@pytest.mark.parametrize("geometry", ["axial", "oblique", "tilted"])
@pytest.mark.parametrize("multiframe", [True, False])
def test_dcm2niix_converts_to_the_same_voxels(tmp_path, geometry, multiframe):
    image = ct_volume(geometry=geometry)
    folder = write_dicom_series(image, tmp_path / "dicom", multiframe=multiframe)
    voxels, grid = _dcm2niix(folder, tmp_path / "nifti")
    # dcm2niix flips axes to its own liking: bring its array into medgan's axis order first
    flip = ornt_transform(io_orientation(grid), io_orientation(GEOMETRIES[geometry]))
    np.testing.assert_array_equal(apply_orientation(voxels, flip), image.numpy()[0])
    # NIfTI stores the affine in float32: about 1e-4 mm at these coordinates (up to 2.3 m)
    np.testing.assert_allclose(grid @ inv_ornt_aff(flip, voxels.shape), GEOMETRIES[geometry], atol=AFFINE_TOLERANCE_MM)
