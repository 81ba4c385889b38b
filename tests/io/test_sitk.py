"""NRRD and MHA through SimpleITK: LPS<->RAS, axis order and vector images."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medgan.errors import InputError, OutputError
from medgan.io import read_image, write_image
from medgan.io.image import make_image


def itk_image(shape_kji, spacing, origin, direction, vector=False):
    rng = np.random.default_rng(1)
    array = rng.integers(-1000, 1000, size=(*shape_kji, 2) if vector else shape_kji).astype(np.int16)
    img = sitk.GetImageFromArray(array, isVector=vector)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img, array


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_read_matches_itk_geometry(tmp_path, suffix):
    c, s = np.cos(0.4), np.sin(0.4)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    img, array = itk_image((5, 6, 7), (0.7, 0.8, 2.0), (-10.0, 20.0, 30.0), direction)
    path = str(tmp_path / f"x{suffix}")
    sitk.WriteImage(img, path)
    image = read_image(path)
    assert image.shape == (1, 7, 6, 5)
    np.testing.assert_array_equal(image[0].numpy(), array.transpose(2, 1, 0))
    # voxel (i, j, k) -> ITK physical point (LPS) -> RAS
    for ijk in [(0, 0, 0), (6, 5, 4), (3, 1, 2)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(ijk))
        ras = (image.affine.numpy() @ [*ijk, 1])[:3]
        np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-9)


def test_vector_image_becomes_channels(tmp_path):
    img, array = itk_image((3, 4, 5), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), vector=True)
    path = str(tmp_path / "v.nrrd")
    sitk.WriteImage(img, path)
    image = read_image(path)
    assert image.shape == (2, 5, 4, 3)
    np.testing.assert_array_equal(image.numpy(), np.moveaxis(array, -1, 0).transpose(0, 3, 2, 1))


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_round_trip(tmp_path, suffix):
    affine = np.array([[-0.5, 0, 0, 12.0], [0, 0, 1.5, -7.0], [0, -0.75, 0, 3.0], [0, 0, 0, 1]])
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(1, 4, 5, 6)
    path = write_image(make_image(data, affine, {}), tmp_path / f"y{suffix}")
    back = read_image(path)
    np.testing.assert_array_equal(back.numpy(), data)
    np.testing.assert_allclose(back.affine.numpy(), affine, atol=1e-9)


def test_sheared_affine_is_refused(tmp_path):
    affine = np.eye(4)
    affine[0, 2] = 0.3
    with pytest.raises(OutputError, match="sheared"):
        write_image(make_image(np.zeros((1, 2, 2, 2), np.int16), affine, {}), tmp_path / "z.nrrd")
    assert not (tmp_path / "z.nrrd").exists()


def test_unreadable_file(tmp_path):
    path = tmp_path / "bad.mha"
    path.write_text("ObjectType = Image\nNDims = 3\n")
    with pytest.raises(InputError, match="bad.mha: not a readable MHA"):
        read_image(path)
