"""The DICOM reader on pydicom's real test files: transfer syntaxes, multi-frame, enhanced CT, DICOMDIR.

Pixels are checked against pydicom's own decoding (pixel_array, then RescaleSlope/Intercept applied
here, per frame where functional groups say so), against the same image stored with another
transfer syntax, and against SimpleITK (GDCM), whose geometry is converted from LPS here.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from external import AFFINE_TOLERANCE_MM, in_axes_of, pydicom_file, sitk_affine, world_mismatch_mm

import medgan.io.dicom_pixels as dicom_pixels
from medgan.io import read_image

# MR_small_padded.dcm carries 128 bytes of padding after its pixels; pydicom says so, rightly
pytestmark = pytest.mark.filterwarnings("ignore:The pixel data is .* excess padding:UserWarning")
MR_SMALL_TWINS = [
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
]
EMRI_SMALL_TWINS = [
    "emri_small_RLE.dcm",
    "emri_small_big_endian.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
]
# (lossy file, the same pixels stored uncompressed after decoding): must be identical
LOSSY_DECODED_TWINS = [("693_J2KI.dcm", "693_UNCI.dcm"), ("MR2_J2KI.dcm", "MR2_UNCI.dcm")]
AGAINST_PYDICOM = [
    "CT_small.dcm",
    "MR_small.dcm",
    *MR_SMALL_TWINS,
    "emri_small.dcm",
    *EMRI_SMALL_TWINS,
    "eCT_Supplemental.dcm",
    "693_J2KR.dcm",
    "693_J2KI.dcm",
    "MR2_J2KI.dcm",
    "MR2_UNCR.dcm",
    "JPEG2000.dcm",
    "JPEG-LL.dcm",
    "JPGExtended.dcm",
    "JPEGLSNearLossless_16.dcm",
    "SC_rgb.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "image_dfl.dcm",
    "rtdose.dcm",
    "rtdose_rle.dcm",
    "liver.dcm",
    "MR-SIEMENS-DICOM-WithOverlays.dcm",
]
# files SimpleITK reads with their patient geometry; (name, several slices?)
WITH_GEOMETRY = [
    ("CT_small.dcm", False),
    ("MR_small.dcm", False),
    ("MR_small_jp2klossless.dcm", False),
    ("693_J2KR.dcm", False),
    ("MR2_UNCR.dcm", False),
    ("MR-SIEMENS-DICOM-WithOverlays.dcm", False),
    ("eCT_Supplemental.dcm", True),
    ("rtdose.dcm", True),
]


def planes_of(image) -> list[np.ndarray]:
    """medgan's [C, i, j(, k)] as one (rows, columns[, samples]) array per slice, like pydicom's."""
    array = image.numpy()
    if array.ndim == 3:
        array = array[..., np.newaxis]
    planes = [np.moveaxis(array[..., k], 0, -1).transpose(1, 0, 2) for k in range(array.shape[-1])]
    return [p[..., 0] if p.shape[-1] == 1 else p for p in planes]


def frame_numbers(image) -> list[int]:
    """The frame (0-based) of the source file each output slice came from, from medgan's provenance."""
    return [(refs[0][2] or 1) - 1 for refs in image.meta["source_slices"]]


def rescaled_frames(ds: pydicom.Dataset) -> list[np.ndarray]:
    """pydicom's pixels with the modality rescale of each frame (functional groups first)."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = ds.pixel_array.astype(np.float64)
    frames = list(pixels) if n_frames > 1 else [pixels]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    out = []
    for index, frame in enumerate(frames):
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        for groups in (shared[0] if shared else None, per_frame[index] if per_frame else None):
            if groups is not None and "PixelValueTransformationSequence" in groups:
                item = groups.PixelValueTransformationSequence[0]
                slope, intercept = float(item.RescaleSlope), float(item.RescaleIntercept)
        out.append(frame * slope + intercept)
    return out


@pytest.mark.parametrize("name", AGAINST_PYDICOM)
def test_pixels_are_pydicoms_rescaled(name):
    path = pydicom_file(name)
    image = read_image(path)
    expected = rescaled_frames(pydicom.dcmread(path))
    planes = planes_of(image)
    assert len(planes) == len(expected)
    for k, frame in zip(range(len(planes)), frame_numbers(image), strict=True):
        if np.issubdtype(planes[k].dtype, np.integer):
            np.testing.assert_array_equal(planes[k], expected[frame])
        else:
            np.testing.assert_allclose(planes[k], expected[frame], rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize(
    ("reference", "twin"),
    [("MR_small.dcm", n) for n in MR_SMALL_TWINS]
    + [("emri_small.dcm", n) for n in EMRI_SMALL_TWINS]
    + [(b, a) for a, b in LOSSY_DECODED_TWINS],
)
def test_every_transfer_syntax_gives_the_same_volume(reference, twin):
    expected, image = read_image(pydicom_file(reference)), read_image(pydicom_file(twin))
    assert image.dtype == expected.dtype
    np.testing.assert_array_equal(image.numpy(), expected.numpy())
    np.testing.assert_array_equal(np.asarray(image.affine), np.asarray(expected.affine))
    assert image.shape[-1] == (10 if reference.startswith("emri") else 1)


@pytest.mark.parametrize(("name", "stack"), WITH_GEOMETRY)
def test_geometry_matches_simpleitk(name, stack):
    path = pydicom_file(name)
    image = read_image(path)
    affine = np.asarray(image.affine, dtype=float)
    itk = sitk.ReadImage(path)
    itk_voxels, itk_affine = sitk.GetArrayFromImage(itk).transpose(2, 1, 0), sitk_affine(itk)
    voxels = image.numpy()[0]
    if stack:
        # a multi-frame volume: readers may run k either way; compare in world space
        voxels_in_ours, itk_in_ours = in_axes_of(itk_voxels, itk_affine, affine)
        np.testing.assert_allclose(voxels, voxels_in_ours, rtol=0, atol=1e-3)
        np.testing.assert_allclose(affine, itk_in_ours, rtol=0, atol=AFFINE_TOLERANCE_MM)
        assert world_mismatch_mm(affine, itk_in_ours, voxels.shape) <= AFFINE_TOLERANCE_MM
    else:
        # one slice: its plane must agree; the slice step of a lone slice is each reader's convention
        np.testing.assert_allclose(voxels, itk_voxels, rtol=0, atol=1e-3)
        np.testing.assert_allclose(affine[:3, [0, 1, 3]], itk_affine[:3, [0, 1, 3]], rtol=0, atol=AFFINE_TOLERANCE_MM)


def test_enhanced_ct_frames_go_in_position_order_in_hu():
    """eCT_Supplemental stores its two frames against the direction of its normal and its rescale in
    the shared functional groups; medgan orders them along the normal and gives HU."""
    path = pydicom_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    image = read_image(path)
    assert frame_numbers(image) == [1, 0]
    affine = np.asarray(image.affine, dtype=float)
    for k, frame in enumerate(frame_numbers(image)):
        lps = ds.PerFrameFunctionalGroupsSequence[frame].PlanePositionSequence[0].ImagePositionPatient
        ras = np.array([-float(lps[0]), -float(lps[1]), float(lps[2])])
        np.testing.assert_allclose(affine @ [0, 0, k, 1], [*ras, 1], atol=AFFINE_TOLERANCE_MM)
    assert image.meta["rescale_intercept"] == -1024.0 and image.meta["units"] == "HU"
    assert image.numpy().min() == -1024 + int(ds.pixel_array.min())


def test_rt_dose_frames_follow_the_grid_frame_offset_vector():
    path = pydicom_file("rtdose.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    offsets = np.array(ds.GridFrameOffsetVector, dtype=float)
    image = read_image(path)
    affine = np.asarray(image.affine, dtype=float)
    x, y, z = np.array(ds.ImagePositionPatient, dtype=float)
    for k, offset in enumerate(offsets):  # axial: the offsets run along +z
        np.testing.assert_allclose(affine @ [0, 0, k, 1], [-x, -y, z + offset, 1], atol=1e-6)


@pytest.mark.parametrize(("name", "max_levels"), [("JPGExtended.dcm", 1), ("SC_rgb_jpeg_lossy_gdcm.dcm", 2)])
def test_lossy_jpeg_agrees_with_another_decoder(name, max_levels):
    """Lossy JPEG decoders may round differently (IDCT): GDCM's and pydicom's plugins agree closely."""
    path = pydicom_file(name)
    ours = np.stack(planes_of(read_image(path))).astype(np.float64)
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(path)).astype(np.float64)
    assert ours.shape == theirs.shape
    difference = np.abs(ours - theirs)
    assert difference.max() <= max_levels
    assert difference.mean() < 0.05


def test_lossy_jpeg_stays_close_to_its_lossless_original():
    """JPGExtended.dcm is the 12-bit lossy JPEG of the image in JPEG-LL.dcm."""
    lossy = read_image(pydicom_file("JPGExtended.dcm")).numpy().astype(np.float64)
    lossless = read_image(pydicom_file("JPEG-LL.dcm")).numpy().astype(np.float64)
    difference = np.abs(lossy - lossless)
    value_range = lossless.max() - lossless.min()
    assert np.sqrt((difference**2).mean()) < 0.02 * value_range
    assert difference.max() < 0.15 * value_range
    assert difference.mean() > 0  # it is lossy: a decoder handing back the lossless twin would be wrong


def test_missing_codec_names_the_extra_to_install(monkeypatch, run_cli, tmp_path):
    monkeypatch.setattr(dicom_pixels, "_decoder_available", lambda syntax: False)
    source = pydicom_file("MR_small_jp2klossless.dcm")
    status, out, err = run_cli("convert", source, tmp_path / "out.nii.gz")
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"medgan: error: {source}: ")
    assert "JPEG 2000" in err and dicom_pixels.CODECS_HINT in err
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------ the DICOMDIR set


def dicomdir() -> str:
    return pydicom_file("DICOMDIR")


def test_dicomdir_lists_every_series_it_references(run_cli):
    from pydicom.fileset import FileSet

    referenced = [instance for instance in FileSet(pydicom.dcmread(dicomdir()))]
    status, out, err = run_cli("info", dicomdir(), "--json", "--headers-only")
    # one real series in the set (77654033/CT2) jumps 202.5 mm between two of its 1.25 mm slices
    gappy = os.path.join(os.path.dirname(dicomdir()), "77654033", "CT2")
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"medgan: error: {gappy}: ") and "--allow-gaps" in err
    records = json.loads(out)
    assert sum(r["files"] for r in records) + len(os.listdir(gappy)) == len(referenced) == 31
    by_folder = {}
    for r in records:
        by_folder.setdefault(os.path.basename(r["path"]), []).append(r)
    # five axial CT slices make one volume; seven radial MR slices (one orientation each) make seven
    assert [r["shape"] for r in by_folder["CT5N"]] == [[16, 16, 5]]
    assert len(by_folder["MR700"]) == 7 and all(r["slices"] == 1 for r in by_folder["MR700"])


def test_dicomdir_series_equals_its_folder_and_simpleitk(run_cli, tmp_path):
    folder = os.path.join(os.path.dirname(dicomdir()), "98892001", "CT5N")
    uid = pydicom.dcmread(os.path.join(folder, os.listdir(folder)[0]), stop_before_pixels=True).SeriesInstanceUID
    status, _, err = run_cli("convert", dicomdir(), tmp_path / "from_dicomdir.nii.gz", "--series", uid)
    assert status == 0, err
    from_dicomdir = read_image(tmp_path / "from_dicomdir.nii.gz")
    from_folder = read_image(folder)
    np.testing.assert_array_equal(from_dicomdir.numpy(), from_folder.numpy())
    np.testing.assert_allclose(from_dicomdir.affine, from_folder.affine, atol=AFFINE_TOLERANCE_MM)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder, uid))
    itk = reader.Execute()
    voxels, affine = in_axes_of(
        sitk.GetArrayFromImage(itk).transpose(2, 1, 0), sitk_affine(itk), np.asarray(from_folder.affine)
    )
    np.testing.assert_array_equal(from_folder.numpy()[0], voxels)
    np.testing.assert_allclose(np.asarray(from_folder.affine), affine, atol=AFFINE_TOLERANCE_MM)
    # InstanceNumber runs against the positions in this series: the order came from the positions
    headers = [pydicom.dcmread(os.path.join(folder, n), stop_before_pixels=True) for n in os.listdir(folder)]
    by_instance = sorted(headers, key=lambda ds: int(ds.InstanceNumber))
    z = [float(ds.ImagePositionPatient[2]) for ds in by_instance]
    assert z == sorted(z, reverse=True)
    assert np.asarray(from_folder.affine)[2, 2] > 0
