"""`medgan enhance`: whole scans through a trained pix2pix enhancer, geometry kept, DICOM derived in the source's
study, a batch that goes on past a bad scan, and every bad input refused in one line with nothing written."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from medgan.io import read_image, write_image
from medgan.io.image import make_image

REPO = Path(__file__).resolve().parents[2]
SHORT = ["train.steps=3", "train.log_every_steps=3", "train.sample_every_steps=3", "train.checkpoint_every_steps=3",
         "train.batch_size=2", "train.num_samples=2"]  # fmt: skip


def _train(tmp_path_factory, *overrides: str) -> str:
    from medgan.config import load_config
    from medgan.tasks.checkpoint import latest_checkpoint
    from medgan.training import TrainConfig, train

    cfg = load_config(TrainConfig, REPO / "configs" / "debug_cpu_pix2pix.yaml", [*SHORT, *overrides])
    return latest_checkpoint(train(cfg, run_dir=str(tmp_path_factory.mktemp("run"))))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """Noisy/clean phantom CT pairs, 48 x 48 x 12 voxels of 4 x 4 x 5 mm, stored LPS as DICOM would."""
    from medgan.data.phantom_pairs import write_phantom_pairs

    folder = tmp_path_factory.mktemp("pairs")
    write_phantom_pairs(str(folder), count=2, spatial_dims=3, shape=(48, 48, 12), spacing_mm=(4.0, 4.0, 5.0))
    return folder


@pytest.fixture(scope="module")
def enhancer_2d(tmp_path_factory, pairs) -> str:
    """A 2D denoiser (16 x 16 slices) trained at the scans' own voxel size (data.spacing_mm null)."""
    return _train(tmp_path_factory, f"data.source={pairs / 'pairs.csv'}", "data.spacing_mm=null")


@pytest.fixture(scope="module")
def enhancer_3d(tmp_path_factory, pairs) -> str:
    """A 3D denoiser on 16 x 16 x 8 patches at the scans' own voxel size."""
    return _train(tmp_path_factory, f"data.source={pairs / 'pairs.csv'}", "data.spacing_mm=null",
                  "data.spatial_dims=3", "data.image_size=[16,16,8]", "discriminator.options.num_layers=1")  # fmt: skip


@pytest.fixture(scope="module")
def super_resolver(tmp_path_factory, pairs) -> str:
    """A 2D model trained on a grid twice as fine in plane (2 x 2 mm) as the 4 mm scans."""
    return _train(tmp_path_factory, f"data.source={pairs / 'pairs.csv'}", "data.spacing_mm=[2.0,2.0]")


def one_line_error(run_cli, *args) -> str:
    status, _, err = run_cli("enhance", *args)
    assert status == 2 and len(err.strip().splitlines()) == 1 and err.startswith("medgan: error: "), (status, err)
    return err


def test_a_nifti_keeps_its_geometry_and_gets_a_sidecar(enhancer_2d, enhancer_3d, pairs, tmp_path, run_cli):
    source = pairs / "noisy_000.nii.gz"
    original = read_image(source)
    for checkpoint, extra, name in ((enhancer_2d, ["--slice-wise"], "two.nii.gz"), (enhancer_3d, [], "three.nii.gz")):
        status, out, _ = run_cli("enhance", source, "-k", checkpoint, "-o", tmp_path / name, "--overlap", "0.5", *extra)
        assert status == 0 and out.strip() == str(tmp_path / name)
        result = read_image(tmp_path / name)
        assert result.shape == original.shape
        assert np.array_equal(result.affine.numpy(), original.affine.numpy())  # the same grid, to the bit
        values = result.numpy()
        assert np.isfinite(values).all() and values.min() >= -1000 - 1e-3 and values.max() <= 1000 + 1e-3  # HU
        sidecar = json.loads((tmp_path / name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["Modality"] == "CT" and sidecar["Units"] == "HU" and sidecar["SyntheticData"] is True
    assert not np.array_equal(
        read_image(tmp_path / "two.nii.gz").numpy(), read_image(tmp_path / "three.nii.gz").numpy()
    )


def test_enhance_computes_what_synthesize_translates(enhancer_2d, pairs, tmp_path):
    """The same scan reaches the same network by enhance's loading and by synthesize's (LoadScand) path."""
    from medgan.inference.enhance import enhance
    from medgan.inference.load import load_generators
    from medgan.inference.synthesize import load_scan_inputs, translate

    source = str(pairs / "noisy_001.nii.gz")
    enhance(source, enhancer_2d, str(tmp_path / "e.nii.gz"), slice_wise=True, overlap=0.5, device="cpu")
    model = load_generators(enhancer_2d)
    (scan,) = load_scan_inputs(model, source)
    expected, _ = translate(model, scan, batch_size=4, device=torch.device("cpu"), overlap=0.5)
    assert np.allclose(read_image(tmp_path / "e.nii.gz").numpy(), expected.numpy(), atol=1e-3)


@pytest.mark.parametrize("native", [True, False])
def test_the_cpu_enhances_in_fp32_by_default_and_warns_of_an_emulated_bf16(enhancer_2d, monkeypatch, caplog, native):
    """auto is fp32 on every CPU (outputs stay in HU); an explicit bf16 is kept, with a warning only where the CPU
    emulates it."""
    import logging

    from medgan.inference.enhance_scan import Enhancer
    from medgan.inference.load import load_generators

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    model = load_generators(enhancer_2d)
    with caplog.at_level(logging.WARNING, logger="medgan.training.precision"):
        assert Enhancer(model, slice_wise=True).precision == "fp32"
        assert not caplog.records
        assert Enhancer(model, slice_wise=True, precision="bf16").precision == "bf16"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == int(not native)
    assert all("--precision" in w and "auto or fp32" in w for w in warnings)


def test_super_resolution_writes_the_finer_training_grid(super_resolver, pairs, tmp_path, run_cli):
    source = pairs / "noisy_000.nii.gz"
    original = read_image(source)
    status, _, _ = run_cli("enhance", source, "-k", super_resolver, "-o", tmp_path / "sr.nii.gz", "--slice-wise",
                           "--patch", "96")  # fmt: skip
    assert status == 0
    result = read_image(tmp_path / "sr.nii.gz")
    assert result.shape == (1, 96, 96, 12)  # 48 voxels of 4 mm -> 96 of 2 mm in plane; the slices kept
    # The same field of view: in-plane steps halved, the first voxel's centre moved back by half the change.
    expected = original.affine.numpy().copy()
    expected[:3, :2] /= 2
    expected[:3, 3] -= (original.affine.numpy()[:3, 0] + original.affine.numpy()[:3, 1]) / 4
    assert np.allclose(result.affine.numpy(), expected, atol=1e-6)


def test_a_cyclegan_checkpoint_makes_domain_b_from_a_2d_image(cyclegan_checkpoint, tmp_path, run_cli):
    source = REPO / "sample_data" / "ct_body_2d.nii.gz"  # CT, domain A; 256 x 256 at 1 mm -> 16 x 16 at 16 mm
    status, _, _ = run_cli("enhance", source, "-k", cyclegan_checkpoint, "-o", tmp_path / "mr.nii.gz")
    assert status == 0
    result = read_image(tmp_path / "mr.nii.gz")
    assert result.shape == (1, 16, 16) and json.loads((tmp_path / "mr.json").read_text())["Modality"] == "MR"
    assert result.numpy().min() >= -1e-3 and result.numpy().max() <= 1000 + 1e-3  # domain B's window


def test_a_dicom_series_becomes_a_derived_series_in_its_study(enhancer_2d, real_series, tmp_path, run_cli):
    series = real_series("axial")  # the real head CT, 256 x 256 x 64 at 0.957 x 0.957 x 1.5 mm
    out = tmp_path / "enhanced"
    status, stdout, _ = run_cli("enhance", series.folder, "-k", enhancer_2d, "-o", out, "--slice-wise",
                                "--patch", "256", "--batch", "8")  # fmt: skip
    assert status == 0 and stdout.strip() == str(out)
    sources = {}
    for path in series.files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        sources[ds.SOPInstanceUID] = ds
    first_source = next(iter(sources.values()))
    written = [pydicom.dcmread(out / name) for name in sorted(os.listdir(out))]
    assert len(written) == len(sources)
    for ds in written:
        assert ds.StudyInstanceUID == first_source.StudyInstanceUID  # the source's study
        assert ds.FrameOfReferenceUID == first_source.FrameOfReferenceUID  # the same patient coordinates
        assert (
            ds.SeriesInstanceUID != first_source.SeriesInstanceUID
            and ds.SeriesInstanceUID == written[0].SeriesInstanceUID
        )
        assert ds.SOPInstanceUID not in sources
        assert ds.ImageType[0] == "DERIVED" and ds.SyntheticData == "YES"
        assert "pix2pix" in ds.DerivationDescription and os.path.basename(enhancer_2d) in ds.DerivationDescription
        assert "step 3" in ds.DerivationDescription
        assert ds.SeriesDescription.startswith("ENHANCED") and str(ds.PatientName) == ""  # identity not copied
        (reference,) = ds.SourceImageSequence  # slice by slice: the source slice at the same place
        referenced = sources[reference.ReferencedSOPInstanceUID]
        assert reference.ReferencedSOPClassUID == referenced.SOPClassUID
        assert np.allclose([float(v) for v in referenced.ImagePositionPatient],
                           [float(v) for v in ds.ImagePositionPatient], atol=1e-3)  # fmt: skip
    back, original = read_image(out), read_image(series.folder)
    assert back.shape == original.shape
    assert np.allclose(back.affine.numpy(), original.affine.numpy(), atol=1e-4)
    assert back.meta["modality"] == "CT" and back.numpy().min() >= -1000.5


def test_a_folder_runs_as_a_batch_past_a_bad_scan_with_a_report(enhancer_2d, pairs, tmp_path, run_cli):
    folder = tmp_path / "scans"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(pairs / "noisy_000.nii.gz", folder / "a.nii.gz")
    shutil.copy(pairs / "noisy_001.nii.gz", folder / "sub" / "b.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"not a nifti at all" * 10)
    out = tmp_path / "out"
    fast = ["--slice-wise", "--patch", "48"]  # one window a slice
    status, stdout, err = run_cli("enhance", folder, "-k", enhancer_2d, "-o", out, *fast)
    assert status == 1 and "2 enhanced, 1 failed" in stdout
    assert "[1/3]" in err and "[3/3]" in err and f"medgan: failed: {folder / 'broken.nii.gz'}" in err
    assert (out / "a.nii.gz").is_file() and (out / "sub" / "b.nii.gz").is_file()
    assert not (out / "broken.nii.gz").exists()
    report = json.loads((out / "report.json").read_text())
    by_input = {Path(r["input"]).name: r for r in report["scans"]}
    assert report["ok"] == 2 and report["failed"] == 1 and report["task"] == "pix2pix"
    assert by_input["a.nii.gz"]["status"] == "ok" and by_input["a.nii.gz"]["output"] == str(out / "a.nii.gz")
    assert by_input["a.nii.gz"]["seconds"] > 0
    assert by_input["broken.nii.gz"]["status"] == "failed" and by_input["broken.nii.gz"]["error"]
    with open(out / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["status"] for r in rows) == ["failed", "ok", "ok"]
    # Run again: every output exists, so nothing is read or written without --overwrite.
    before = (out / "a.nii.gz").read_bytes()
    err = one_line_error(run_cli, folder, "-k", enhancer_2d, "-o", out, *fast)
    assert "already exists" in err and "--overwrite" in err and (out / "a.nii.gz").read_bytes() == before
    status, _, _ = run_cli("enhance", folder, "-k", enhancer_2d, "-o", out, *fast, "--overwrite")
    assert status == 1 and (out / "a.nii.gz").is_file()  # the bad scan fails again; the others are replaced


def test_a_folder_of_dicom_series_and_a_corrupt_file(enhancer_2d, real_series, tmp_path, run_cli):
    """Each series in one folder is a scan of the batch (numbered outputs); an unreadable file is reported."""
    folder = tmp_path / "dicom"
    folder.mkdir()
    axial, oblique = (_first_slices(real_series(v), 8) for v in ("axial", "oblique"))
    for prefix, paths in (("ct", axial), ("ob", oblique)):
        for path in paths:
            os.symlink(path, folder / f"{prefix}_{os.path.basename(path)}")
    (folder / "garbage.dcm").write_bytes(b"\0" * 200)
    out = tmp_path / "out"
    status, stdout, err = run_cli("enhance", folder, "-k", enhancer_2d, "-o", out, "--slice-wise", "--patch", "256",
                                  "--copy-patient")  # fmt: skip
    assert status == 1 and "2 enhanced, 1 failed" in stdout and "garbage.dcm" in err
    assert sorted(os.listdir(out)) == ["dicom_1", "dicom_2", "report.csv", "report.json"]
    sources = {str(pydicom.dcmread(p).SOPInstanceUID) for p in axial + oblique}
    for name in ("dicom_1", "dicom_2"):
        back = read_image(out / name)
        ds = pydicom.dcmread(out / name / sorted(os.listdir(out / name))[0])
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in sources and back.shape == (1, 256, 256, 8)
        source = pydicom.dcmread((axial + oblique)[0])  # asked for: the patient and the source's description
        assert ds.PatientName == source.PatientName and ds.PatientID == source.PatientID
        assert ds.SeriesDescription.startswith("ENHANCED InVesalius head CT, ")
    originals = [read_image(folder, series=s.key, skip_invalid=True).affine.numpy() for s in _series_of(folder)]
    written = [read_image(out / name).affine.numpy() for name in ("dicom_1", "dicom_2")]
    for affine in originals:  # each series' grid comes back in one of the outputs
        assert any(np.allclose(affine, other, atol=1e-4) for other in written)


def _first_slices(series, count: int) -> list[str]:
    """The files of a series' first `count` slices (in position order), so they still form an even stack."""
    wanted = series.positions_lps[:count]
    return [p for p in series.files
            if np.abs(wanted - np.array([float(v) for v in pydicom.dcmread(p).ImagePositionPatient])).sum(1).min()
            < 1e-3]  # fmt: skip


def _series_of(folder):
    from medgan.io.dicom import scan_dicom

    return scan_dicom(str(folder), skip_invalid=True).series


def test_bad_inputs_are_one_line_and_write_nothing(enhancer_2d, enhancer_3d, ct_checkpoint, label2image_checkpoint,
                                                   pairs, tmp_path, run_cli):  # fmt: skip
    scan = pairs / "noisy_000.nii.gz"
    out = tmp_path / "out.nii.gz"
    thin = tmp_path / "thin.nii.gz"  # 4 slices: fewer than the 3D window's 8
    original = read_image(scan)
    write_image(make_image(original.numpy()[..., :4], original.affine.numpy(), {"modality": "CT"}), str(thin))
    cases = [
        ((scan, "-k", ct_checkpoint, "-o", out), "draws scans from noise"),
        ((scan, "-k", label2image_checkpoint[0], "-o", out), "translates label_map (labels), not one scan"),
        ((REPO / "sample_data" / "ct_body_2d.nii.gz", "-k", enhancer_3d, "-o", out), "this checkpoint enhances 3D"),
        ((scan, "-k", enhancer_3d, "-o", out, "--slice-wise"), "this checkpoint is 3D"),
        ((thin, "-k", enhancer_3d, "-o", out), "smaller than the 16x16x8 window"),
        ((scan, "-k", enhancer_2d, "-o", out), "pass --slice-wise"),
        ((scan, "-k", enhancer_2d, "-o", out, "--slice-wise", "--patch", "12"), "--patch 12x12: unet generator"),
        ((scan, "-k", enhancer_2d, "-o", out, "--slice-wise", "--patch", "64"), "smaller than the 64x64 window"),
        ((scan, "-k", enhancer_2d, "-o", tmp_path / "noname", "--slice-wise"), "cannot tell the output format"),
        ((scan, "-k", enhancer_2d, "-o", out, "--format", "dicom"), "DICOM output is a folder"),
        ((scan, "-k", enhancer_2d, "-o", out, "--overlap", "1"), "--overlap 1.0 must be in [0, 1)"),
        ((scan, "-k", scan, "-o", out), str(scan)),  # not a checkpoint
        ((tmp_path / "missing.nii.gz", "-k", enhancer_2d, "-o", out), "no such file or folder"),
        ((scan, "-k", enhancer_2d, "-o", scan, "--overwrite"), "is the input"),
    ]
    for args, expected in cases:
        err = one_line_error(run_cli, *args)
        assert expected in err, (args, err)
        assert not out.exists() and not (tmp_path / "out.json").exists() and not (tmp_path / "noname").exists()
    out.write_bytes(b"keep me")
    err = one_line_error(run_cli, scan, "-k", enhancer_2d, "-o", out, "--slice-wise")
    assert "already exists" in err and out.read_bytes() == b"keep me"
    assert read_image(scan).shape == original.shape  # inputs untouched
