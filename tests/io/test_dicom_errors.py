"""Bad inputs to `medgan convert`: one line on stderr naming the culprit, exit status 2, nothing written.

The inputs are copies of a real CT series (the InVesalius head, `external.real_series("axial")`),
broken the way real data breaks: a file cut short, a stray document, a slice missing, two series
in one folder. pydicom's own broken files and the DICOMDIR set's real gap are tested too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest
from external import AFFINE_TOLERANCE_MM, pydicom_file

from medgan.io import _SUFFIXES, read_image
from medgan.io.dicom import scan_dicom, skips_reported_by_caller
from medgan.io.dicom_scan import READABLE

GAP_SLICE = 20  # the slice (in position order) removed or broken below


@pytest.fixture
def axial(real_series):
    return real_series("axial")


@pytest.fixture
def series(axial, tmp_path):
    """A private copy of the real axial CT series, and an empty folder for outputs."""
    shutil.copytree(axial.folder, tmp_path / "series")
    (tmp_path / "out").mkdir()
    return tmp_path / "series"


def output(series) -> str:
    return str(series.parent / "out" / "volume.nii.gz")


def nothing_written(series) -> bool:
    """No output and no leftover temporary file next to where the output would have gone."""
    return os.listdir(series.parent / "out") == []


def error_line(err: str) -> str:
    """stderr must be exactly one line: `medgan: error: ...`."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("medgan: error: "), err
    return lines[0]


def file_at_position(folder, k: int) -> str:
    """The file holding slice k counted along the normal (names and InstanceNumbers are shuffled)."""
    headers = [pydicom.dcmread(folder / name, stop_before_pixels=True) for name in os.listdir(folder)]
    headers.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    return headers[k].filename


def cut(path, keep_bytes: int) -> None:
    with open(path, "rb") as fh:
        data = fh.read()
    assert keep_bytes < len(data)
    with open(path, "wb") as fh:
        fh.write(data[:keep_bytes])


def pixel_data_offset(path) -> int:
    """Where the PixelData element starts, found here by parsing up to it."""
    with open(path, "rb") as fh:
        pydicom.dcmread(fh, stop_before_pixels=True)
        return fh.tell()


@pytest.mark.external
@pytest.mark.parametrize("where", ["header", "pixel data"])
def test_truncated_slice(series, run_cli, where):
    victim = file_at_position(series, GAP_SLICE)
    offset = pixel_data_offset(victim)
    cut(victim, offset // 2 if where == "header" else offset + 12 + 256 * 256)  # half the header / pixels
    status, out, err = run_cli("convert", series, output(series))
    assert status == 2 and out == ""
    line = error_line(err)
    assert line.startswith(f"medgan: error: {victim}: ") and "truncated" in line
    assert nothing_written(series)


@pytest.mark.external
def test_truncated_compressed_slice(real_series, tmp_path, run_cli):
    shutil.copytree(real_series("mr_sagittal").folder, tmp_path / "series")
    victim = sorted((tmp_path / "series").iterdir())[7]  # JPEG 2000: cut in the middle of its fragments
    cut(victim, (pixel_data_offset(victim) + os.path.getsize(victim)) // 2)
    status, _, err = run_cli("convert", tmp_path / "series", tmp_path / "out.nii.gz")
    assert status == 2
    line = error_line(err)
    assert line.startswith(f"medgan: error: {victim}: ") and "truncated" in line
    assert not (tmp_path / "out.nii.gz").exists()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("MR_truncated.dcm", "pixel data is truncated"),
        ("emri_small_jpeg_2k_lossless_too_short.dcm", "pixel data is truncated"),
        ("rtplan_truncated.dcm", "truncated DICOM file"),
    ],
)
def test_pydicoms_truncated_files(name, reason, run_cli, tmp_path):
    source = pydicom_file(name)
    status, _, err = run_cli("convert", source, tmp_path / "out.nii.gz")
    assert status == 2
    assert error_line(err).startswith(f"medgan: error: {source}: {reason}")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "content"),
    [("README.txt", b"Head CT exported from the PACS on 2024-05-02.\n"), ("IM0065", bytes(range(256)) * 40)],
)
@pytest.mark.external
def test_non_dicom_file_in_the_series_folder(series, run_cli, name, content):
    (series / name).write_bytes(content)
    status, _, err = run_cli("convert", series, output(series))
    assert status == 2
    line = error_line(err)
    assert line.startswith(f"medgan: error: {series / name}: ") and "not a DICOM file" in line
    assert nothing_written(series)


@pytest.mark.external
def test_skip_invalid_passes_over_a_stray_file(series, axial, run_cli):
    (series / "README.txt").write_text("not an image\n")
    status, out, err = run_cli("convert", series, output(series), "--skip-invalid")
    assert status == 0, err
    assert out.strip() == output(series)
    image = nib.load(output(series))
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), axial.voxels)


@pytest.mark.external
def test_missing_slice_is_an_error(series, run_cli):
    os.remove(file_at_position(series, GAP_SLICE))
    status, _, err = run_cli("convert", series, output(series))
    assert status == 2
    line = error_line(err)
    assert line.startswith(f"medgan: error: {series}: ")
    assert "not evenly spaced" in line and "3.000 mm" in line and "--allow-gaps" in line
    assert nothing_written(series)


@pytest.mark.external
def test_info_describes_a_series_with_a_gap_only_with_allow_gaps(series, run_cli):
    os.remove(file_at_position(series, GAP_SLICE))
    status, _, err = run_cli("info", series, "--json")
    assert status == 2 and "not evenly spaced" in error_line(err)
    for headers_only in ([], ["--headers-only"]):
        status, out, err = run_cli("info", series, "--json", "--allow-gaps", *headers_only)
        assert status == 0, err
        (record,) = json.loads(out)
        assert any("interpolated onto a regular grid" in w for w in record["warnings"]), record


def check_interpolated(image_voxels, affine, axial) -> None:
    """The gap is filled by the mean of its neighbours; every other slice and the grid are exact."""
    truth = axial.voxels.astype(np.float32)
    expected = truth.copy()
    expected[..., GAP_SLICE] = (truth[..., GAP_SLICE - 1] + truth[..., GAP_SLICE + 1]) / 2
    np.testing.assert_array_equal(image_voxels, expected)
    np.testing.assert_allclose(affine, axial.affine, atol=AFFINE_TOLERANCE_MM)


@pytest.mark.external
def test_missing_slice_with_allow_gaps_warns_and_interpolates(series, axial, run_cli, caplog):
    os.remove(file_at_position(series, GAP_SLICE))
    with caplog.at_level(logging.WARNING):
        status, _, err = run_cli("convert", series, output(series), "--allow-gaps")
    assert status == 0, err
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "interpolating" in r.getMessage()]
    assert len(warnings) == 1 and "3.000 mm" in warnings[0].getMessage()
    written = nib.load(output(series))
    check_interpolated(np.asanyarray(written.dataobj), written.affine, axial)
    image = read_image(series, allow_gaps=True)
    assert image.meta["interpolated_slices"] == [GAP_SLICE]


@pytest.mark.external
def test_skip_invalid_and_allow_gaps_recover_from_a_truncated_slice(series, axial, run_cli):
    victim = file_at_position(series, GAP_SLICE)
    cut(victim, pixel_data_offset(victim) + 5000)
    status, _, err = run_cli("convert", series, output(series), "--skip-invalid")
    assert status == 2
    assert error_line(err).startswith(f"medgan: error: {series}: ")  # skipped the file, then found the gap
    status, _, err = run_cli("convert", series, output(series), "--skip-invalid", "--allow-gaps")
    assert status == 0, err
    written = nib.load(output(series))
    check_interpolated(np.asanyarray(written.dataobj), written.affine, axial)


def test_real_gap_in_pydicoms_dicomdir_set(run_cli, tmp_path):
    """77654033/CT2 holds four real 1.25 mm slices, one of them 202.5 mm from the others."""
    folder = os.path.join(os.path.dirname(pydicom_file("DICOMDIR")), "77654033", "CT2")
    status, _, err = run_cli("convert", folder, tmp_path / "ct2.nii.gz")
    assert status == 2 and "202.500 mm" in error_line(err) and not (tmp_path / "ct2.nii.gz").exists()
    image = read_image(folder, allow_gaps=True)
    z = sorted(float(pydicom.dcmread(os.path.join(folder, n)).ImagePositionPatient[2]) for n in os.listdir(folder))
    n_out = round((z[-1] - z[0]) / 1.25) + 1
    assert image.shape[-1] == n_out
    assert image.meta["interpolated_slices"] == list(range(1, n_out - 3))
    voxels, w = image.numpy()[0], 1.25 / (z[1] - z[0])  # slice 1 lies 1.25 mm into the 202.5 mm gap
    np.testing.assert_allclose(voxels[..., 1], (1 - w) * voxels[..., 0] + w * voxels[..., n_out - 3], atol=1e-3)
    assert not np.array_equal(voxels[..., 1], voxels[..., 0])
    assert image.meta["warnings"] and "interpolated" in image.meta["warnings"][0]


@pytest.mark.external
def test_mixed_series_need_series(real_series, tmp_path, run_cli):
    mixed = tmp_path / "mixed"
    for variant in ("axial", "mr_sagittal"):
        shutil.copytree(real_series(variant).folder, mixed / variant)
    uids = {
        v: pydicom.dcmread(real_series(v).files[0], stop_before_pixels=True).SeriesInstanceUID
        for v in ("axial", "mr_sagittal")
    }
    status, out, err = run_cli("convert", mixed, tmp_path / "out.nii.gz")
    assert status == 2 and out == ""
    *listing, last = err.splitlines()
    assert last.startswith(f"medgan: error: {mixed}: holds 2 series") and "--series" in last
    assert len(listing) == 2
    assert any(uids["axial"] in line and " CT " in line for line in listing)
    assert any(uids["mr_sagittal"] in line and " MR " in line for line in listing)
    assert not (tmp_path / "out.nii.gz").exists()

    status, _, err = run_cli("convert", mixed, tmp_path / "out.nii.gz", "--series", uids["mr_sagittal"])
    assert status == 0, err
    np.testing.assert_array_equal(
        np.asanyarray(nib.load(tmp_path / "out.nii.gz").dataobj), real_series("mr_sagittal").voxels
    )


def test_nonexistent_path(tmp_path, run_cli):
    missing = tmp_path / "no" / "such" / "series"
    status, _, err = run_cli("convert", missing, tmp_path / "out.nii.gz")
    assert status == 2
    assert error_line(err) == f"medgan: error: {missing}: no such file or folder"
    assert os.listdir(tmp_path) == []


@pytest.mark.external
@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
@pytest.mark.parametrize("what", ["file", "folder"])
def test_unreadable_path(series, run_cli, what):
    target = file_at_position(series, GAP_SLICE) if what == "file" else series
    os.chmod(target, 0)
    try:
        status, _, err = run_cli("convert", series, output(series))
    finally:
        os.chmod(target, 0o755)
    assert status == 2
    line = error_line(err)
    assert str(target) in line and ("permission denied" in line or "cannot read" in line)
    assert nothing_written(series)


@pytest.mark.external
def test_existing_output_needs_overwrite(series, axial, run_cli):
    target = series.parent / "out" / "volume.nii.gz"
    target.write_bytes(b"an older result")
    status, _, err = run_cli("convert", series, target)
    assert status == 2
    assert error_line(err) == f"medgan: error: {target}: already exists; pass --overwrite to replace it"
    assert target.read_bytes() == b"an older result"
    assert os.listdir(target.parent) == ["volume.nii.gz"]

    status, _, err = run_cli("convert", series, target, "--overwrite")
    assert status == 0, err
    np.testing.assert_array_equal(np.asanyarray(nib.load(target).dataobj), axial.voxels)
    assert sorted(os.listdir(target.parent)) == ["volume.json", "volume.nii.gz"]  # the sidecar keeps the modality
    assert json.loads((target.parent / "volume.json").read_text())["Modality"] == "CT"


@pytest.mark.external
def test_stderr_of_the_real_command(series):
    """Outside pytest's capture, as a user sees it: a bad slice is one error line; with --allow-gaps
    a gap is one warning line and the output path on stdout."""
    victim = file_at_position(series, GAP_SLICE)
    cut(victim, pixel_data_offset(victim) // 2)
    command = [sys.executable, "-m", "medgan", "convert", str(series), output(series)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [f"medgan: error: {victim}: truncated DICOM file: it ends inside its header"]
    assert nothing_written(series)

    os.remove(victim)
    result = subprocess.run([*command, "--allow-gaps"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [output(series)]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("medgan: WARNING: ") and "interpolating" in lines[0]


def test_a_file_in_another_format_is_named_by_its_suffix(tmp_path, run_cli):
    """Anything medgan does not read by suffix is tried as DICOM; a PNG is then an unsupported format,
    named with the formats medgan reads, while a file without a suffix is simply not DICOM."""
    png = tmp_path / "scan.PNG"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
    status, _, err = run_cli("convert", png, tmp_path / "out.nii.gz")
    assert status == 2
    assert error_line(err) == (
        f"medgan: error: {png}: unsupported format .png: not a DICOM file, and medgan reads only DICOM, "
        "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd)"
    )
    plain = tmp_path / "IM0001"
    plain.write_bytes(bytes(range(256)) * 4)
    status, _, err = run_cli("convert", plain, tmp_path / "out.nii.gz")
    assert error_line(err) == f"medgan: error: {plain}: not a DICOM file (no SOP Class UID and no image attributes)"
    assert sorted(os.listdir(tmp_path)) == ["IM0001", "scan.PNG"]


def test_the_formats_named_are_the_ones_medgan_reads():
    assert set(re.findall(r"\.[a-z.]+[a-z]", READABLE)) == set(_SUFFIXES)


def test_skipped_files_are_logged_unless_the_caller_reports_them(tmp_path, caplog):
    (tmp_path / "preview.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
    caplog.set_level(logging.WARNING, logger="medgan.io.dicom")
    scan = scan_dicom(tmp_path, skip_invalid=True)
    assert [p.path for p in scan.problems] == [str(tmp_path / "preview.png")]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"skipped {tmp_path / 'preview.png'}"]
    caplog.clear()
    with skips_reported_by_caller():
        scan = scan_dicom(tmp_path, skip_invalid=True)
    assert len(scan.problems) == 1 and caplog.records == []
    scan_dicom(tmp_path, skip_invalid=True)  # the block's end restores logging
    assert len(caplog.records) == 1
