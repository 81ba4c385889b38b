"""`medgan synthesize`: reproducible by seed, written back in HU with the training spacing, marked synthetic."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medgan.inference import synthesize
from medgan.io import read_image
from medgan.io.geometry import spacing_mm

REPO = Path(__file__).resolve().parents[2]


def voxels(path: str) -> np.ndarray:
    return read_image(path).numpy()


def test_same_seed_same_scans_other_seed_other_scans(ct_checkpoint, tmp_path):
    first = synthesize(ct_checkpoint, count=3, out_dir=str(tmp_path / "a"), seed=5, batch_size=2)
    again = synthesize(ct_checkpoint, count=3, out_dir=str(tmp_path / "b"), seed=5, batch_size=2)
    other = synthesize(ct_checkpoint, count=3, out_dir=str(tmp_path / "c"), seed=6, batch_size=2)
    assert [os.path.basename(p) for p in first] == ["synthetic_0000.nii.gz", "synthetic_0001.nii.gz",
                                                    "synthetic_0002.nii.gz"]  # fmt: skip
    for a, b, c in zip(first, again, other, strict=True):
        assert np.array_equal(voxels(a), voxels(b))
        assert not np.array_equal(voxels(a), voxels(c))


def test_nifti_has_the_training_spacing_and_hounsfield_units(ct_checkpoint, tmp_path):
    (path,) = synthesize(ct_checkpoint, count=1, out_dir=str(tmp_path), seed=1)
    image = read_image(path)
    assert image.shape == (1, 16, 16)
    assert spacing_mm(image.affine.numpy())[:2] == pytest.approx([16.0, 16.0])
    values = image.numpy()
    assert values.min() >= -1000 - 1e-3 and values.max() <= 1000 + 1e-3  # the training window, in HU
    assert values.max() - values.min() > 10  # not a blank image


def test_dicom_is_a_valid_synthetic_ct_series(ct_checkpoint, tmp_path):
    (folder,) = synthesize(ct_checkpoint, count=1, out_dir=str(tmp_path), format="dicom", seed=1)
    (nifti,) = synthesize(ct_checkpoint, count=1, out_dir=str(tmp_path / "n"), seed=1)
    back = read_image(folder)
    ds = pydicom.dcmread(os.path.join(folder, sorted(os.listdir(folder))[0]))
    assert ds.SyntheticData == "YES" and ds.Modality == "CT" and "DERIVED" in ds.ImageType
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([16.0, 16.0])
    assert np.allclose(back.numpy()[..., 0], voxels(nifti), atol=0.05)  # the same HU, to the rescale's step


def test_a_slab_checkpoint_writes_its_middle_slice_or_with_whole_slab_every_slice_in_place(
    slab_checkpoint, ct_checkpoint, tmp_path, run_cli
):
    from medgan.io.nifti import read_nifti

    (middle,) = synthesize(slab_checkpoint, count=1, out_dir=str(tmp_path / "m"), seed=3)
    (slab,) = synthesize(slab_checkpoint, count=1, out_dir=str(tmp_path / "s"), seed=3, whole_slab=True)
    source = read_nifti(str(REPO / "sample_data" / "ct_body_3d.nii.gz"))
    thin = read_image(slab)
    assert read_image(middle).shape == (1, 16, 16) and thin.shape == (1, 16, 16, 3)
    assert spacing_mm(thin.affine.numpy()) == pytest.approx([16.0, 16.0, spacing_mm(source.affine.numpy())[2]])
    assert np.array_equal(thin.numpy()[..., 1], voxels(middle))  # the middle of the slab is the default output
    assert not np.array_equal(thin.numpy()[..., 0], thin.numpy()[..., 2])
    status, _, err = run_cli("synthesize", "--checkpoint", ct_checkpoint, "--out", tmp_path / "x", "--whole-slab")
    assert status == 2 and "data.slab_slices > 1" in err and len(err.strip().splitlines()) == 1


def test_png_preview_and_3d_volumes(ct_checkpoint, ct3d_checkpoint, tmp_path):
    (png,) = synthesize(ct_checkpoint, count=1, out_dir=str(tmp_path), format="png")
    with open(png, "rb") as fh:
        data = fh.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (16, 16)
    (volume,) = synthesize(ct3d_checkpoint, count=1, out_dir=str(tmp_path / "3d"))
    image = read_image(volume)
    assert image.shape == (1, 16, 16, 16)
    assert spacing_mm(image.affine.numpy()) == pytest.approx([16.0, 16.0, 9.0])


def test_classes_of_a_conditional_checkpoint(conditional_checkpoint, ct_checkpoint, tmp_path, run_cli):
    status, out, _ = run_cli("synthesize", "--checkpoint", conditional_checkpoint, "-n", "2", "--class", "1",
                             "--out", tmp_path / "mr", "--seed", "3")  # fmt: skip
    assert status == 0 and len(out.split()) == 2
    status, _, err = run_cli("synthesize", "--checkpoint", conditional_checkpoint, "-n", "1", "--class", "7",
                             "--out", tmp_path / "x")  # fmt: skip
    assert status == 2 and "classes 0 to 1" in err and len(err.strip().splitlines()) == 1
    status, _, err = run_cli("synthesize", "--checkpoint", ct_checkpoint, "-n", "1", "--class", "0",
                             "--out", tmp_path / "y")  # fmt: skip
    assert status == 2 and "class-conditional" in err


def test_image_to_image_checkpoints_translate_whole_scans_slice_by_slice(pix2pix_checkpoint, tmp_path, run_cli):
    checkpoint, folder = pix2pix_checkpoint
    source = os.path.join(folder, "noisy_000.nii.gz")
    status, out, _ = run_cli("synthesize", "--checkpoint", checkpoint, "--input", source, "--out", tmp_path)
    assert status == 0
    result, original = read_image(out.strip()), read_image(source)
    assert result.shape == (1, 16, 16, 6)  # the input's slices, at the training in-plane spacing (64 x 4 mm / 16)
    assert spacing_mm(result.affine.numpy()) == pytest.approx([16.0, 16.0, 5.0])
    assert spacing_mm(original.affine.numpy()) == pytest.approx([4.0, 4.0, 5.0])
    status, _, err = run_cli("synthesize", "--checkpoint", checkpoint, "--out", tmp_path / "none")
    assert status == 2 and "--input" in err
