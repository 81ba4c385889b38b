"""NIfTI: the standard's sform/qform precedence, real files, and exact round trips."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medgan.errors import InputError, OutputError
from medgan.io import read_image, write_image
from medgan.io.image import make_image

NIB_DATA = os.path.join(os.path.dirname(nib.__file__), "tests", "data")


def oblique_affine() -> np.ndarray:
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[0.9 * c, -1.1 * s, 0, -80.0], [0.9 * s, 1.1 * c, 0, 20.5], [0, 0, 2.5, -33.0], [0, 0, 0, 1]])
    return affine


def save(tmp_path, data, affine, name="x.nii.gz", sform=1, qform=1, qaffine=None):
    """Write a NIfTI whose header holds exactly the given transforms and codes."""
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header.set_sform(affine, code=sform)
    header.set_qform(affine if qaffine is None else qaffine, code=qform)
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, None, header), path)
    return path


def sitk_ras_affine(path) -> np.ndarray:
    """An independent reading: SimpleITK's LPS geometry turned into a RAS affine here."""
    img = sitk.ReadImage(str(path))
    m = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = m, img.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "standard.nii.gz"])
def test_real_files_match_nibabel(name):
    path = os.path.join(NIB_DATA, name)
    ref = nib.load(path)
    image = read_image(path)
    data = np.asanyarray(ref.dataobj)
    expected = np.moveaxis(data, -1, 0) if data.ndim == 4 else data[np.newaxis]
    np.testing.assert_array_equal(image.numpy(), expected)
    np.testing.assert_allclose(image.affine.numpy(), ref.affine, atol=1e-6)
    assert image.meta["format"] == "nifti"


def test_sform_wins_over_qform(tmp_path):
    data = np.zeros((4, 5, 6), np.int16)
    path = save(tmp_path, data, oblique_affine(), qaffine=np.diag([2.0, 2.0, 2.0, 1.0]))
    image = read_image(path)
    np.testing.assert_allclose(image.affine.numpy(), oblique_affine(), atol=1e-6)
    assert image.meta["nifti_xform"] == "sform"


def test_qform_used_when_sform_code_is_zero(tmp_path):
    data = np.zeros((4, 5, 6), np.int16)
    path = save(tmp_path, data, np.diag([9.0, 9.0, 9.0, 1.0]), sform=0, qaffine=oblique_affine())
    image = read_image(path)
    np.testing.assert_allclose(image.affine.numpy(), oblique_affine(), atol=1e-5)
    assert image.meta["nifti_xform"] == "qform"
    np.testing.assert_allclose(image.affine.numpy(), sitk_ras_affine(path), atol=1e-4)


def test_pixdim_fallback_when_no_transform(tmp_path):
    data = np.zeros((4, 5, 6), np.uint8)
    path = save(tmp_path, data, np.diag([9.0, 9.0, 9.0, 1.0]), name="plain.nii", sform=0, qform=0)
    image = read_image(path)
    assert image.meta["nifti_xform"] == "pixdim"
    np.testing.assert_allclose(image.affine.numpy(), nib.load(path).header.get_base_affine())


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [(np.int16, (1, 7, 6, 5)), (np.float32, (1, 7, 6, 5)), (np.uint8, (3, 7, 6, 5)), (np.int16, (1, 9, 8))],
)
def test_round_trip_is_exact(tmp_path, dtype, shape):
    rng = np.random.default_rng(0)
    data = (rng.normal(0, 500, shape)).astype(dtype)
    image = make_image(data, oblique_affine(), {"modality": "CT"})
    path = write_image(image, tmp_path / "out.nii.gz")
    back = read_image(path)
    assert back.dtype == image.dtype
    np.testing.assert_array_equal(back.numpy(), data)
    np.testing.assert_allclose(back.affine.numpy(), oblique_affine(), atol=1e-6)
    header = nib.load(path).header
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 1
    if len(shape) == 4 and shape[0] == 1:
        np.testing.assert_allclose(sitk_ras_affine(path), oblique_affine(), atol=1e-4)


def test_sheared_affine_keeps_sform_and_drops_qform(tmp_path):
    affine = oblique_affine()
    affine[:3, 2] += affine[:3, 1] * 0.3  # gantry tilt
    image = make_image(np.zeros((1, 4, 4, 4), np.int16), affine, {})
    path = write_image(image, tmp_path / "tilt.nii")
    header = nib.load(path).header
    assert int(header["qform_code"]) == 0 and int(header["sform_code"]) == 1
    np.testing.assert_allclose(read_image(path).affine.numpy(), affine, atol=1e-6)


def test_bad_inputs_and_outputs(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(InputError, match="broken.nii.gz: not a readable NIfTI"):
        read_image(broken)
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "absent.nii")
    image = make_image(np.zeros((1, 2, 2, 2), np.int16), np.eye(4), {})
    target = write_image(image, tmp_path / "a.nii")
    with pytest.raises(OutputError, match="already exists"):
        write_image(image, target)
    write_image(image, target, overwrite=True)
    with pytest.raises(OutputError, match="cannot tell the output format"):
        write_image(image, tmp_path / "a.png")
    assert sorted(os.listdir(tmp_path)) == ["a.nii", "broken.nii.gz"]  # nothing partial left behind


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    image = make_image(np.zeros((1, 2, 2, 2), np.int16), np.eye(4), {})

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", explode)
    with pytest.raises(OutputError, match=r"cannot write it \(disk full\)"):
        write_image(image, tmp_path / "a.nii.gz")
    assert os.listdir(tmp_path) == []
