"""medgan's reader inside MONAI pipelines gives exactly what read_image gives."""

from __future__ import annotations

import numpy as np
import pytest
from monai.transforms import LoadImage, Orientation, Spacing
from pydicom.data import get_testdata_file

from medgan.io import read_image, write_image
from medgan.io.image import make_image
from medgan.io.monai_reader import MedganReader


@pytest.fixture
def nifti(tmp_path):
    affine = np.array([[-0.8, 0, 0, 40.0], [0, -0.8, 0, 30.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(1, 6, 5, 4) - 60
    return write_image(make_image(data, affine, {"modality": "CT"}), tmp_path / "ct.nii.gz")


@pytest.mark.parametrize("source", ["nifti", "dicom"])
def test_load_image_matches_read_image(nifti, source):
    path = nifti if source == "nifti" else get_testdata_file("CT_small.dcm")
    expected = read_image(path)
    loaded = LoadImage(reader=MedganReader(), image_only=True, ensure_channel_first=True, dtype=None)(path)
    np.testing.assert_array_equal(loaded.numpy(), expected.numpy())
    np.testing.assert_allclose(loaded.affine.numpy(), expected.affine.numpy())
    assert loaded.meta["space"] == "RAS"


def test_registered_reader_is_chosen_for_a_dicom_folder(tmp_path):
    folder = tmp_path / "series"
    image = make_image(np.arange(2 * 3 * 4, dtype=np.int16).reshape(1, 2, 3, 4), np.diag([-1.0, -1, 3, 1]), {})
    write_image(image, folder, to="dicom", modality="CT")
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    loader.register(MedganReader())
    loaded = loader(str(folder))
    assert loaded.shape == (1, 2, 3, 4)
    np.testing.assert_array_equal(loaded.numpy(), image.numpy().astype(np.float32))


def test_monai_spatial_transforms_follow_the_affine(nifti):
    loaded = LoadImage(reader=MedganReader(), image_only=True, ensure_channel_first=True)(nifti)
    ras = Orientation(axcodes="RAS", labels=None)(loaded)
    resampled = Spacing(pixdim=(1.6, 1.6, 2.0), mode="nearest")(ras)
    # The world position of the first voxel's centre moves only by the reorientation.
    world = loaded.affine.numpy() @ [5, 4, 0, 1]
    np.testing.assert_allclose(ras.affine.numpy() @ [0, 0, 0, 1], world, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(resampled.affine.numpy()[:3, :3], axis=0), [1.6, 1.6, 2.0])
    np.testing.assert_allclose(resampled.affine.numpy()[:, 3], world, atol=1e-6)


def test_several_files_become_channels(nifti):
    loaded = LoadImage(reader=MedganReader(), image_only=True, ensure_channel_first=True)([nifti, nifti])
    assert loaded.shape == (2, 6, 5, 4)


def test_suffix_check():
    reader = MedganReader()
    assert reader.verify_suffix("a.nii.gz") and reader.verify_suffix("x/IM0001") and reader.verify_suffix("a.dcm")
    assert not reader.verify_suffix("photo.png")
