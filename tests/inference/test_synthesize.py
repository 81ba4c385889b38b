"""`medgan synthesize`: reproducible by seed, written back in HU with the training spacing, marked synthetic."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

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


def test_truncation_draws_plainer_scans_toward_the_mean_and_is_recorded(stylegan_checkpoint, tmp_path):
    import nibabel as nib

    def drawn(psi: float, name: str) -> np.ndarray:
        paths = synthesize(stylegan_checkpoint, count=4, out_dir=str(tmp_path / name), seed=2, truncation_psi=psi)
        return np.stack([voxels(p) for p in paths]), paths

    plain, plain_paths = drawn(1.0, "plain")
    half, half_paths = drawn(0.5, "half")
    mean, _ = drawn(0.0, "mean")
    for scans in (plain, half):  # the same latents: truncation only moves them toward the mean
        assert not np.allclose(scans[0], scans[1])
    np.testing.assert_allclose(mean, np.broadcast_to(mean[:1], mean.shape), atol=1e-3)  # every one is the mean
    assert np.abs(half - mean).mean() < np.abs(plain - mean).mean()
    assert "truncation 0.5" in nib.load(half_paths[0]).header["descrip"].item().decode()
    assert "truncation" not in nib.load(plain_paths[0]).header["descrip"].item().decode()
    default, _ = drawn(None, "default")  # the checkpoint's own psi: none was configured
    np.testing.assert_array_equal(default, plain)


def test_the_configured_truncation_is_the_default_and_the_flag_overrides_it(stylegan_psi0_checkpoint, tmp_path):
    import nibabel as nib

    checkpoint = stylegan_psi0_checkpoint
    paths = synthesize(checkpoint, count=3, out_dir=str(tmp_path / "own"), seed=1)
    own = np.stack([voxels(p) for p in paths])
    np.testing.assert_allclose(own, np.broadcast_to(own[:1], own.shape), atol=1e-3)  # psi 0: all the mean scan
    assert "truncation 0" in nib.load(paths[0]).header["descrip"].item().decode()
    free = np.stack([voxels(p) for p in synthesize(checkpoint, count=3, out_dir=str(tmp_path / "free"), seed=1,
                                                   truncation_psi=1.0)])  # fmt: skip
    assert not np.allclose(free[0], free[1])


def test_truncation_is_refused_where_it_has_no_meaning(ct_checkpoint, stylegan_checkpoint, pix2pix_checkpoint,
                                                       tmp_path, run_cli):  # fmt: skip
    status, _, err = run_cli("synthesize", "--checkpoint", ct_checkpoint, "-n", "1", "--truncation", "0.7",
                             "--out", tmp_path / "a")  # fmt: skip
    assert status == 2 and "mapping network" in err and len(err.strip().splitlines()) == 1
    status, _, _ = run_cli("synthesize", "--checkpoint", ct_checkpoint, "-n", "1", "--truncation", "1",
                           "--out", tmp_path / "ok")  # fmt: skip
    assert status == 0  # psi 1 is no truncation, which every generator can do
    status, _, err = run_cli("synthesize", "--checkpoint", stylegan_checkpoint, "-n", "1", "--truncation", "1.5",
                             "--out", tmp_path / "b")  # fmt: skip
    assert status == 2 and "--truncation" in err
    checkpoint, folder = pix2pix_checkpoint
    status, _, err = run_cli("synthesize", "--checkpoint", checkpoint, "--input", folder, "--truncation", "0.7",
                             "--out", tmp_path / "c")  # fmt: skip
    assert status == 2 and "draw from noise" in err
    assert not any((tmp_path / name).exists() and any((tmp_path / name).iterdir()) for name in "abc")


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


def test_cyclegan_outputs_are_labelled_and_windowed_as_domain_b(cyclegan_checkpoint, tmp_path):
    import torch

    from medgan.io.png import to_uint8

    record = torch.load(cyclegan_checkpoint, weights_only=True)["data_record"]
    assert (record["modality"], record["domain_b"]["modality"]) == ("CT", "MR")
    ct = str(REPO / "sample_data" / "ct_body_2d.nii.gz")
    (folder,) = synthesize(cyclegan_checkpoint, inputs=ct, out_dir=str(tmp_path / "d"), format="dicom")
    ds = pydicom.dcmread(os.path.join(folder, sorted(os.listdir(folder))[0]))
    assert ds.Modality == "MR" and ds.SOPClassUID.name == "MR Image Storage"
    assert ds.get("RescaleType") != "HU"
    (nifti,) = synthesize(cyclegan_checkpoint, inputs=ct, out_dir=str(tmp_path / "n"))
    (png,) = synthesize(cyclegan_checkpoint, inputs=ct, out_dir=str(tmp_path / "p"), format="png")
    expected = to_uint8(np.rot90(voxels(nifti)[0]), *record["domain_b"]["window"])  # B's window, not A's
    with open(png, "rb") as fh:
        import zlib

        chunks, data = [], fh.read()[8:]
        while data:
            (length,), kind = struct.unpack(">I", data[:4]), data[4:8]
            chunks += [data[8 : 8 + length]] if kind == b"IDAT" else []
            data = data[12 + length :]
    rows = np.frombuffer(zlib.decompress(b"".join(chunks)), np.uint8).reshape(expected.shape[0], -1)[:, 1:]
    assert np.array_equal(rows, expected)


def test_a_scan_to_translate_stored_in_another_axis_order_is_turned_like_the_training_data(
    pix2pix_checkpoint, tmp_path
):
    import nibabel as nib
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    checkpoint, folder = pix2pix_checkpoint
    source = nib.load(os.path.join(folder, "noisy_000.nii.gz"))
    assert "".join(nib.aff2axcodes(source.affine)) == "LPS"  # trained on scans stored as DICOM stores them
    change = ornt_transform(io_orientation(source.affine), axcodes2ornt(("R", "A", "S")))
    data = apply_orientation(np.asarray(source.dataobj), change)
    flipped = str(tmp_path / "noisy_ras.nii.gz")
    nib.Nifti1Image(data, source.affine @ inv_ornt_aff(change, source.shape)).to_filename(flipped)
    (plain,) = synthesize(checkpoint, inputs=os.path.join(folder, "noisy_000.nii.gz"), out_dir=str(tmp_path / "a"))
    (turned,) = synthesize(checkpoint, inputs=flipped, out_dir=str(tmp_path / "b"))
    assert np.allclose(read_image(turned).affine.numpy(), read_image(plain).affine.numpy())
    assert np.array_equal(voxels(turned), voxels(plain))  # the network saw the same slices, not mirrored ones


def test_a_scan_stored_with_its_slice_axis_first_is_resampled_along_the_training_slice_axis(
    pix2pix_checkpoint, tmp_path
):
    """The in-plane resampling of a 2D checkpoint applies to the training plane, whatever axis order a scan was
    stored in: the slice axis is found after the scan is turned like the training data, not before."""
    import nibabel as nib

    checkpoint, folder = pix2pix_checkpoint
    source = nib.load(os.path.join(folder, "noisy_000.nii.gz"))
    data = np.transpose(np.asarray(source.dataobj), (2, 0, 1))  # slices first: (k, i, j)
    permuted = str(tmp_path / "noisy_kij.nii.gz")
    nib.Nifti1Image(data, source.affine[:, [2, 0, 1, 3]]).to_filename(permuted)
    (plain,) = synthesize(checkpoint, inputs=os.path.join(folder, "noisy_000.nii.gz"), out_dir=str(tmp_path / "a"))
    (turned,) = synthesize(checkpoint, inputs=permuted, out_dir=str(tmp_path / "b"))
    assert np.allclose(read_image(turned).affine.numpy(), read_image(plain).affine.numpy())
    assert np.array_equal(voxels(turned), voxels(plain))


def test_each_class_is_written_with_its_own_modality(conditional_checkpoint, mixed_class_checkpoint, tmp_path,
                                                     run_cli):  # fmt: skip
    def modality(folder):
        ds = pydicom.dcmread(os.path.join(folder, sorted(os.listdir(folder))[0]))
        return ds.Modality, ds.SOPClassUID.name, ds.get("RescaleType")

    ct, mr = synthesize(conditional_checkpoint, count=2, out_dir=str(tmp_path / "both"), format="dicom")  # cycles
    assert modality(ct) == ("CT", "CT Image Storage", "HU") and modality(mr)[:2] == ("MR", "MR Image Storage")
    (mr,) = synthesize(conditional_checkpoint, count=1, class_index=1, out_dir=str(tmp_path / "one"), format="dicom")
    assert modality(mr)[0] == "MR" and modality(mr)[2] != "HU"
    # A class that mixes CT and MR: DICOM needs --modality, refused before anything is written.
    status, _, err = run_cli("synthesize", "--checkpoint", mixed_class_checkpoint, "-n", "1", "--class", "0",
                             "--format", "dicom", "--out", tmp_path / "mixed")  # fmt: skip
    assert status == 2 and "class 0 mixes CT and MR" in err and "--modality" in err
    assert len(err.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "mixed")
    (ct,) = synthesize(mixed_class_checkpoint, count=1, class_index=0, modality="CT", out_dir=str(tmp_path / "m"),
                       format="dicom")  # fmt: skip
    assert modality(ct)[0] == "CT"
    (only_ct,) = synthesize(mixed_class_checkpoint, count=1, class_index=1, out_dir=str(tmp_path / "c"), format="dicom")
    assert modality(only_ct)[0] == "CT"


def test_a_folder_of_several_dicom_series_translates_every_series(cyclegan_checkpoint, real_series, tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    ct = REPO / "sample_data" / "dicom" / "ct_series"
    for prefix, paths in (("ct", [ct / name for name in os.listdir(ct)]), ("mr", real_series("mr_sagittal").files)):
        for path in paths:
            os.symlink(path, folder / f"{prefix}_{os.path.basename(path)}")
    outputs = synthesize(cyclegan_checkpoint, inputs=str(folder), out_dir=str(tmp_path / "out"))
    one = synthesize(cyclegan_checkpoint, inputs=str(ct), out_dir=str(tmp_path / "one"))
    assert len(outputs) == 2
    assert any(np.array_equal(voxels(path), voxels(one[0])) for path in outputs)


def test_label2image_refuses_inputs_that_are_not_label_maps_of_its_kind(label2image_checkpoint, tmp_path, run_cli):
    import torch

    checkpoint, folder = label2image_checkpoint
    num_labels = torch.load(checkpoint, weights_only=True)["data_record"]["num_labels"]
    labels = read_image(os.path.join(folder, "labels_000.nii.gz"))
    (path,) = synthesize(checkpoint, inputs=os.path.join(folder, "labels_000.nii.gz"), out_dir=str(tmp_path / "ok"))
    assert read_image(path).shape == (1, 16, 16, 6)
    too_many = tmp_path / "too_many.nii.gz"
    from medgan.io import write_image
    from medgan.io.image import make_image

    array = labels.numpy().copy()
    array[0, 30:34, 30:34, 2] = num_labels + 4
    write_image(make_image(array, labels.affine.numpy(), {}), str(too_many))
    cases = [
        (too_many, f"holds label {num_labels + 4} but this checkpoint was trained on labels 0 to {num_labels - 1}"),
        (REPO / "sample_data" / "ct_body_2d.nii.gz", "a label map holds labels 0, 1, 2, ... but this image holds -"),
        (REPO / "sample_data" / "mr_brain_3d.nii.gz", "but this checkpoint was trained on labels 0 to"),
    ]
    for source, expected in cases:
        status, _, err = run_cli("synthesize", "--checkpoint", checkpoint, "--input", source, "--out", tmp_path / "x")
        assert status == 2 and expected in err and str(source) in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "x")


def test_outputs_are_checked_before_any_is_written(ct_checkpoint, tmp_path, run_cli):
    """A rerun into a folder holding some of the names writes none of them: never a folder of two seeds."""
    out = tmp_path / "out"
    assert run_cli("synthesize", "--checkpoint", ct_checkpoint, "-n", "2", "--out", out, "--seed", "1")[0] == 0
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}
    status, _, err = run_cli("synthesize", "--checkpoint", ct_checkpoint, "-n", "4", "--out", out, "--seed", "2")
    assert status == 2 and "2 of the 4 outputs already exist (the first: synthetic_0000.nii.gz)" in err
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before
    (tmp_path / "afile").write_text("x")
    status, _, err = run_cli("synthesize", "--checkpoint", ct_checkpoint, "-n", "1", "--out", tmp_path / "afile")
    assert status == 2 and "is a file, not a folder" in err


def test_device_cuda_without_a_gpu_is_refused(ct_checkpoint, tmp_path, run_cli):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    status, _, err = run_cli("synthesize", "--checkpoint", ct_checkpoint, "-n", "1", "--out", tmp_path, "--device",
                             "cuda")  # fmt: skip
    assert status == 2 and "--device cuda: no CUDA GPU is visible here" in err


def test_drawn_scans_are_centred_on_the_origin(ct_checkpoint, tmp_path):
    """No position is learned from noise: the field of view is centred on (0, 0, 0), in the training data's
    orientation and spacing."""
    (path,) = synthesize(ct_checkpoint, count=1, out_dir=str(tmp_path))
    scan = read_image(path)
    affine, shape = np.asarray(scan.affine), np.asarray(scan.shape[1:])
    centre = affine[:3, : len(shape)] @ ((shape - 1) / 2) + affine[:3, 3]
    np.testing.assert_allclose(centre, 0.0, atol=1e-6)
    np.testing.assert_allclose(spacing_mm(affine)[: len(shape)], [16.0, 16.0])
