"""`medgan convert` on real multi-slice series against the ground truth, SimpleITK and dcm2niix.

The series are real scans written one file per slice at test time (see `external.real_series`):
the InVesalius head CT as an axial, an oblique and a gantry-tilted CT series, and the Colin27 T1
as a sagittal MR series compressed with JPEG 2000. File names and InstanceNumbers are shuffled,
so only the positions give the slice order. Every comparison is made on the NIfTI file that
`medgan convert` wrote, read back with nibabel, never with medgan's own reader.
"""

from __future__ import annotations

import functools

import nibabel as nib
import numpy as np
import pydicom
import pytest
from external import (
    AFFINE_TOLERANCE_MM,
    GANTRY_TILT_DEG,
    LPS_TO_RAS,
    VARIANTS,
    dcm2niix,
    in_axes_of,
    nifti_voxels,
    sitk_series,
    world_mismatch_mm,
)
from scipy.ndimage import map_coordinates

from medgan.cli import main

pytestmark = pytest.mark.external
UNSHEARED = ("axial", "oblique", "mr_sagittal")


@pytest.fixture(scope="module")
def converted(real_series, tmp_path_factory):
    """`converted(variant)` -> (voxels, affine, nibabel image) of `medgan convert SERIES out.nii.gz`."""

    @functools.cache
    def convert(variant: str):
        out = tmp_path_factory.mktemp(variant) / f"{variant}.nii.gz"
        main(["convert", str(real_series(variant).folder), str(out)])
        image = nib.load(out)
        return np.asanyarray(image.dataobj), image.affine, image

    return convert


def headers_along_normal(files: list[str]) -> list[pydicom.Dataset]:
    """Every file's header in slice order, sorted here along the normal of ImageOrientationPatient."""
    headers = [pydicom.dcmread(path) for path in files]
    iop = np.array(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(headers, key=lambda ds: float(np.array(ds.ImagePositionPatient, dtype=float) @ normal))


def corner_mismatch_mm(affine, expected, shape) -> float:
    return world_mismatch_mm(np.asarray(affine, float), np.asarray(expected, float), shape)


@pytest.mark.parametrize("variant", VARIANTS)
def test_series_order_is_only_in_the_positions(real_series, variant):
    """The test data itself: real values, one series, names and InstanceNumbers out of position order."""
    series = real_series(variant)
    headers = headers_along_normal(series.files)
    names_in_position_order = [h.filename for h in headers]
    assert names_in_position_order != sorted(names_in_position_order)
    instances = [int(h.InstanceNumber) for h in headers]
    assert instances not in (sorted(instances), sorted(instances, reverse=True))
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    assert len({h.SOPInstanceUID for h in headers}) == len(headers) == series.voxels.shape[2]
    assert {h.Modality for h in headers} == {series.modality}
    if series.modality == "CT":
        assert (headers[0].PixelRepresentation, float(headers[0].RescaleIntercept)) == (0, -1024.0)
        assert series.voxels.min() == -1024 and series.voxels.max() > 1500  # air and bone
        assert float(headers[0].GantryDetectorTilt) == (GANTRY_TILT_DEG if variant == "tilted" else 0.0)
    else:
        assert headers[0].file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
        assert np.unique(series.voxels).size > 100


@pytest.mark.parametrize("variant", VARIANTS)
def test_convert_gives_the_ground_truth(converted, real_series, variant):
    series = real_series(variant)
    voxels, affine, image = converted(variant)
    assert voxels.dtype == np.int16
    np.testing.assert_array_equal(voxels, series.voxels)
    np.testing.assert_allclose(affine, series.affine, rtol=0, atol=AFFINE_TOLERANCE_MM)
    assert corner_mismatch_mm(affine, series.affine, voxels.shape) <= AFFINE_TOLERANCE_MM
    # a sheared grid (gantry tilt) cannot be a qform: only the sform carries it
    assert int(image.header["qform_code"]) == (0 if variant == "tilted" else 1)
    assert int(image.header["sform_code"]) == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_slice_sits_at_its_image_position_with_its_own_pixels(converted, real_series, variant):
    """The ground truth straight from the files: voxel (0, 0, k) is slice k's ImagePositionPatient, and
    slice k holds that file's pixels (decoded by pydicom) times RescaleSlope plus RescaleIntercept."""
    voxels, affine, _ = converted(variant)
    headers = headers_along_normal(real_series(variant).files)
    assert voxels.shape[2] == len(headers)
    for k, ds in enumerate(headers):
        expected_ras = LPS_TO_RAS[:3, :3] @ np.array(ds.ImagePositionPatient, dtype=float)
        np.testing.assert_allclose(affine[:3, :3] @ [0, 0, k] + affine[:3, 3], expected_ras, atol=AFFINE_TOLERANCE_MM)
        pixels = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        np.testing.assert_array_equal(voxels[:, :, k], pixels.T)


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_simpleitk(converted, real_series, variant):
    """ImageSeriesReader with ITK's measured slice direction (ForceOrthogonalDirection off), which
    represents a tilted stack as a sheared direction matrix: the same grid as medgan's, tilt included."""
    voxels, affine, _ = converted(variant)
    itk_voxels, itk_affine = sitk_series(real_series(variant).folder, orthogonal=False)
    np.testing.assert_array_equal(voxels, itk_voxels)
    np.testing.assert_allclose(affine, itk_affine, rtol=0, atol=AFFINE_TOLERANCE_MM)
    assert corner_mismatch_mm(affine, itk_affine, voxels.shape) <= AFFINE_TOLERANCE_MM


@pytest.mark.parametrize("variant", UNSHEARED)
def test_matches_simpleitk_default_reader(converted, real_series, variant):
    voxels, affine, _ = converted(variant)
    itk_voxels, itk_affine = sitk_series(real_series(variant).folder)
    np.testing.assert_array_equal(voxels, itk_voxels)
    assert corner_mismatch_mm(affine, itk_affine, voxels.shape) <= AFFINE_TOLERANCE_MM


def test_simpleitk_default_reader_squares_a_tilted_stack(converted, real_series):
    """By default ITK forces an orthogonal grid: it keeps the voxels, the first slice and the in-plane axes,
    but steps the length of the measured step (1.5 mm) along the normal instead of along the table, so
    slice k lands k * 1.5 mm * 2 sin(tilt / 2) away from its ImagePositionPatient. medgan keeps the
    measured step (a sheared affine), which is what the positions say."""
    voxels, affine, _ = converted("tilted")
    itk_voxels, itk_affine = sitk_series(real_series("tilted").folder)
    np.testing.assert_array_equal(voxels, itk_voxels)
    np.testing.assert_allclose(affine[:3, [0, 1, 3]], itk_affine[:3, [0, 1, 3]], atol=AFFINE_TOLERANCE_MM)
    assert np.linalg.norm(itk_affine[:3, 2]) == pytest.approx(np.linalg.norm(affine[:3, 2]), abs=1e-6)
    drift_mm = (voxels.shape[2] - 1) * 1.5 * 2 * np.sin(np.radians(GANTRY_TILT_DEG) / 2)
    last_slice = np.array([0, 0, voxels.shape[2] - 1, 1.0])
    assert np.linalg.norm((affine @ last_slice - itk_affine @ last_slice)[:3]) == pytest.approx(drift_mm, abs=0.01)


@pytest.mark.parametrize("variant", UNSHEARED)
def test_matches_dcm2niix(converted, real_series, variant, tmp_path, dcm2niix_tool):
    """dcm2niix stores rows flipped (and may permute axes): compare after bringing its array onto
    medgan's axis order, which also moves its affine; then voxels and affines must agree."""
    voxels, affine, _ = converted(variant)
    written = dcm2niix(real_series(variant).folder, tmp_path)
    theirs = written["volume"]
    their_voxels, their_affine = in_axes_of(nifti_voxels(theirs), theirs.affine, affine)
    np.testing.assert_array_equal(voxels, their_voxels)
    np.testing.assert_allclose(affine, their_affine, rtol=0, atol=AFFINE_TOLERANCE_MM)
    assert corner_mismatch_mm(affine, their_affine, voxels.shape) <= AFFINE_TOLERANCE_MM


def test_tilted_series_against_dcm2niix(converted, real_series, tmp_path, dcm2niix_tool):
    """dcm2niix writes two files for a tilted series. Its plain copy has the same voxels and first slice
    but an approximate affine (NIfTI's qform cannot shear); its `_Tilt_1` copy is resampled onto an
    orthogonal grid. That copy is the meaningful check of medgan's sheared affine: at the world point of
    every one of its voxels, medgan's grid must give the same value (interpolated along the column
    direction, where the slices are offset) up to dcm2niix's rounding to whole HU."""
    voxels, affine, _ = converted("tilted")
    written = dcm2niix(real_series("tilted").folder, tmp_path)
    assert set(written) >= {"volume", "volume_Tilt_1"}

    plain = written["volume"]
    plain_voxels, _ = in_axes_of(nifti_voxels(plain), plain.affine, affine)
    np.testing.assert_array_equal(voxels, plain_voxels)
    # its first voxel is a corner of medgan's first slice, and its rows run along medgan's
    ni, nj = voxels.shape[:2]
    corners = affine @ np.array([[0, ni - 1, 0, ni - 1], [0, 0, nj - 1, nj - 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    assert np.linalg.norm(corners[:3].T - plain.affine[:3, 3], axis=1).min() <= AFFINE_TOLERANCE_MM
    assert np.abs(np.abs(plain.affine[:3, 0]) - np.abs(affine[:3, 0])).max() <= 1e-6

    resampled = written["volume_Tilt_1"]
    values = nifti_voxels(resampled)
    index = np.indices(values.shape).reshape(3, -1)
    world = resampled.affine @ np.vstack([index, np.ones(index.shape[1])])
    ours = np.linalg.solve(affine, world)[:3]  # continuous (i, j, k) in medgan's grid
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    for axis in (0, 2):  # dcm2niix only shifts within the plane, along j: i and k stay whole
        assert np.abs(ours[axis] - np.round(ours[axis])).max() * spacing[axis] <= AFFINE_TOLERANCE_MM
        ours[axis] = np.round(ours[axis])
    inside = (ours[1] >= 0) & (ours[1] <= voxels.shape[1] - 1)
    assert inside.mean() > 0.85
    expected = map_coordinates(voxels.astype(np.float64), ours[:, inside], order=1)
    difference = np.abs(expected - values.reshape(-1)[inside])
    assert difference.max() < 1.0, f"max |difference| {difference.max():.3f} HU"
    assert np.median(difference) < 0.5
