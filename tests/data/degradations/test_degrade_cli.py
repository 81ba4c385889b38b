"""`medgan degrade`: files and DICOM series in their own format, the JSON record, replay, batches, bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medgan.io import read_image
from medgan.io.geometry import spacing_mm

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data"
CT_SERIES = SAMPLE / "dicom" / "ct_series"
MR_2D = SAMPLE / "mr_brain_2d.nii.gz"


def test_nifti_gives_nifti_with_its_geometry_a_record_and_an_exact_replay(run_cli, tmp_path):
    out = tmp_path / "noisy.nii.gz"
    status, stdout, stderr = run_cli("degrade", MR_2D, out, "--kind", "mr-noise", "--snr", 10, "--seed", 3)
    assert status == 0, stderr
    assert stdout.strip() == str(out)
    source, degraded = read_image(MR_2D), read_image(out)
    np.testing.assert_array_equal(np.asarray(degraded.affine), np.asarray(source.affine))
    assert degraded.shape == source.shape and not np.array_equal(degraded.numpy(), source.numpy())
    document = json.loads((tmp_path / "noisy.nii.gz.json").read_text())
    assert document["kind"] == "mr-noise" and document["seed"] == 3 and document["input"] == str(MR_2D)
    assert document["record"]["snr"] == 10.0 and "noise_seed" in document["record"] and document["medgan_version"]
    again = tmp_path / "again.nii.gz"
    status, _, stderr = run_cli("degrade", MR_2D, again, "--replay", tmp_path / "noisy.nii.gz.json")
    assert status == 0, stderr
    np.testing.assert_array_equal(read_image(again).numpy(), degraded.numpy())


def test_a_dicom_series_gives_a_derived_dicom_series_on_the_same_grid(run_cli, tmp_path):
    out = tmp_path / "lowdose"
    args = ("--kind", "ct-lowdose", "--dose", 0.25, "-p", "views=32", "--seed", 0)
    status, _, stderr = run_cli("degrade", CT_SERIES, out, *args)
    assert status == 0, stderr
    source, degraded = read_image(CT_SERIES), read_image(out)
    np.testing.assert_allclose(np.asarray(degraded.affine), np.asarray(source.affine), atol=1e-4)
    assert degraded.shape == source.shape and degraded.meta["modality"] == "CT"
    difference = degraded.numpy().astype(float) - source.numpy()
    assert difference.std() > 1.0 and abs(difference.mean()) < 5.0
    first = pydicom.dcmread(sorted(out.iterdir())[0])
    original = pydicom.dcmread(sorted(CT_SERIES.iterdir())[0])
    assert first.ImageType[0] == "DERIVED" and first.SeriesInstanceUID != original.SeriesInstanceUID
    assert "ct-lowdose" in first.DerivationDescription and "dose 0.25" in first.DerivationDescription
    # A simulated acquisition is synthetic data, made by physics rather than by a network.
    assert first.SyntheticData == "YES" and first.DerivationCodeSequence[0].CodeMeaning == "Image Processing"
    assert json.loads((tmp_path / "lowdose.json").read_text())["record"]["slice_axis"] == 2


def test_thick_slices_write_the_new_spacing_into_the_affine(run_cli, tmp_path):
    out = tmp_path / "thick.nii.gz"
    status, _, stderr = run_cli("degrade", CT_SERIES, out, "--kind", "thick-slices", "--thickness", 10)
    assert status == 0, stderr
    source, thick = read_image(CT_SERIES), read_image(out)
    assert spacing_mm(np.asarray(source.affine)) == pytest.approx([2.0, 2.0, 5.0])
    assert spacing_mm(np.asarray(thick.affine)) == pytest.approx([2.0, 2.0, 10.0])
    assert thick.shape == (1, 128, 128, 14)
    expected = source.numpy().astype(float).reshape(1, 128, 128, 14, 2).mean(axis=-1)
    assert np.abs(thick.numpy() - expected).max() <= 0.5  # int16 output, rounded


@pytest.mark.parametrize(("args", "words"), [
    (("--kind", "ct-lowdose", "--dose", 2), ["dose", "2", "[0.001, 1]"]),
    (("--kind", "ct-lowdose", "--snr", 10), ["--snr does not apply to ct-lowdose"]),
    (("--kind", "mr-noise", "-p", "sigma=3"), ["unknown parameter 'sigma'"]),
    (("--kind", "mr-nois"), ["did you mean 'mr-noise'"]),
    (("--kind", "mr-undersample", "--acceleration", 0.5), ["acceleration", "0.5", "[1, 32]"]),
    (("--kind", "thick-slices", "--thickness", 1), ["thinner"]),
    (("--kind", "mr-gibbs",), ["mr-gibbs simulates MR acquisition, but the image is a CT"]),
    (("--kind", "mr-noise", "--severity", 3), ["severity", "3", "[0, 1]"]),
])  # fmt: skip
def test_bad_parameters_fail_with_one_line_exit_2_and_nothing_written(run_cli, tmp_path, args, words):
    out = tmp_path / "out"
    status, stdout, stderr = run_cli("degrade", CT_SERIES, out, *args)
    assert status == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("medgan: error:"), stderr
    assert all(w in stderr for w in words), stderr
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_kept_without_overwrite(run_cli, tmp_path):
    out = tmp_path / "noisy.nii.gz"
    out.write_bytes(b"precious")
    status, _, stderr = run_cli("degrade", MR_2D, out, "--kind", "mr-bias")
    assert status == 2 and "already exists" in stderr and out.read_bytes() == b"precious"
    assert not (tmp_path / "noisy.nii.gz.json").exists()
    status, _, stderr = run_cli("degrade", MR_2D, out, "--kind", "mr-bias", "--overwrite")
    assert status == 0, stderr
    assert read_image(out).shape == read_image(MR_2D).shape


def test_a_folder_is_a_batch_that_goes_on_past_a_bad_scan(run_cli, tmp_path):
    scans = tmp_path / "scans"
    (scans / "sub").mkdir(parents=True)
    shutil.copy(MR_2D, scans / "a.nii.gz")
    shutil.copy(MR_2D, scans / "sub" / "b.nii.gz")
    (scans / "broken.nii.gz").write_bytes(b"not an image at all")
    out = tmp_path / "out"
    status, stdout, stderr = run_cli("degrade", scans, out, "--kind", "mr-undersample", "-p", "acceleration=[2, 6]")
    assert status == 1
    assert "2 degraded, 1 failed" in stdout and "broken.nii.gz" in stderr and "[3/3]" in stderr
    a, b = read_image(out / "a.nii.gz"), read_image(out / "sub" / "b.nii.gz")
    assert not np.array_equal(a.numpy(), b.numpy())  # each scan draws its own parameters and lines
    records = [json.loads((out / name).read_text())["record"] for name in ("a.nii.gz.json", "sub/b.nii.gz.json")]
    assert all(2 <= r["acceleration"] <= 6 for r in records) and records[0] != records[1]
    with open(out / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(row["status"] for row in rows) == ["failed", "ok", "ok"]
    assert next(row for row in rows if row["status"] == "failed")["input"].endswith("broken.nii.gz")


def test_list_names_every_kind_and_its_parameters(run_cli):
    status, stdout, _ = run_cli("degrade", "--list")
    assert status == 0
    for words in ("ct-lowdose", "dose", "mr-undersample", "acceleration", "thick-slices", "thickness_mm"):
        assert words in stdout


@pytest.mark.parametrize(("name", "extra", "words"), [
    ("noisy", (), "cannot tell the output format"),
    ("noisy.nii.gz", ("--to", "nrrd"), "the name says nifti but --to says nrrd"),
])  # fmt: skip
def test_an_output_name_without_a_format_fails_before_any_work(run_cli, tmp_path, name, extra, words):
    status, _, stderr = run_cli("degrade", MR_2D, tmp_path / name, "--kind", "mr-noise", *extra)
    assert status == 2 and words in stderr and len(stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_dicom_output_leaves_the_patient_out_unless_asked(run_cli, tmp_path):
    original = pydicom.dcmread(sorted(CT_SERIES.iterdir())[0])
    assert str(original.PatientName)  # the sample series has an (invented) patient
    for flag, expected in (((), ""), (("--copy-patient",), str(original.PatientName))):
        out = tmp_path / f"out{len(flag)}"
        status, _, stderr = run_cli("degrade", CT_SERIES, out, "--kind", "thick-slices", "--thickness", 10, *flag)
        assert status == 0, stderr
        assert str(pydicom.dcmread(sorted(out.iterdir())[0]).PatientName) == expected
