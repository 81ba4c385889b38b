"""Ways real files and real users break I/O: outputs over inputs, signals and full disks mid-write,
orientation jitter across a series, scaled and 4D NIfTI, colour images, linked folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medgan.errors import OutputError
from medgan.io import find_images, read_image, scan_dicom, write_image

NIB_DATA = os.path.join(os.path.dirname(nib.__file__), "tests", "data")


def checksums(folder) -> dict[str, bytes]:
    return {p: open(p, "rb").read() for p in sorted(map(str, folder.rglob("*"))) if os.path.isfile(p)}


def test_convert_refuses_to_overwrite_its_source(tmp_path, real_series, run_cli):
    series = real_series("axial")
    source = tmp_path / "study" / "ct"
    shutil.copytree(series.folder, source)
    (tmp_path / "study" / "notes.txt").write_text("keep me")
    before = checksums(tmp_path / "study")
    for output, says in ((source, "is the source"), (tmp_path / "study", "contains the source")):
        status, _, err = run_cli("convert", source, output, "--to", "dicom", "--overwrite")
        assert status == 2 and says in err and len(err.strip().splitlines()) == 1, err
    status, _, err = run_cli("convert", source, source / "ct.nii.gz")
    assert status == 2 and "lies inside the source" in err
    assert checksums(tmp_path / "study") == before


def test_orientation_jitter_does_not_split_a_series(tmp_path, real_series):
    """Cosines that differ by 2e-7 but straddle a rounding boundary are one stack, not two halves."""
    series = real_series("axial")
    folder = tmp_path / "jitter"
    folder.mkdir()
    for k, path in enumerate(series.files):
        ds = pydicom.dcmread(path)
        iop = [float(v) for v in ds.ImageOrientationPatient]
        iop[1] = 0.0000499 if k % 2 else 0.0000501
        ds.ImageOrientationPatient = [f"{v:.7f}" for v in iop]
        ds.save_as(folder / os.path.basename(path))
    scan = scan_dicom(folder)
    assert len(scan.series) == 1 and len(scan.series[0].frames) == len(series.files)
    image = read_image(folder)
    np.testing.assert_array_equal(np.asarray(image[0]), series.voxels)


def test_write_errors_are_one_line(tmp_path, monkeypatch, run_cli):
    source = os.path.join(NIB_DATA, "anatomical.nii")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", full_disk)
    status, _, err = run_cli("convert", source, tmp_path / "out.nii.gz")
    expected = f"medgan: error: {tmp_path / 'out.nii.gz'}: cannot write it (No space left on device)"
    assert status == 2 and err.strip() == expected
    assert os.listdir(tmp_path) == []


def test_to_must_agree_with_the_suffix(tmp_path):
    image = read_image(os.path.join(NIB_DATA, "anatomical.nii"))
    with pytest.raises(OutputError, match="the name says nrrd but --to says nifti"):
        write_image(image, tmp_path / "x.nrrd", to="nifti")
    with pytest.raises(OutputError, match="the name says nifti but --to says nrrd"):
        write_image(image, tmp_path / "x.nii", to="nrrd")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("slope", "inter", "dtype"), [(1.0, -1024.0, np.int16), (0.5, 3.0, np.float32)])
def test_scaled_nifti_keeps_integers_and_records_the_scaling(tmp_path, slope, inter, dtype):
    """dcm2niix writes CT as int16 with scl_inter -1024: read back as int16 HU, as DICOM is."""
    stored = np.random.default_rng(0).integers(0, 3000, (12, 10, 4)).astype(np.int16)
    img = nib.Nifti1Image(stored, np.diag([0.5, 0.5, 2.0, 1.0]))
    img.header.set_slope_inter(slope, inter)
    nib.save(img, tmp_path / "ct.nii.gz")
    image = read_image(tmp_path / "ct.nii.gz")
    assert np.asarray(image).dtype == dtype
    assert (image.meta["rescale_slope"], image.meta["rescale_intercept"]) == (slope, inter)
    np.testing.assert_allclose(np.asarray(image[0], dtype=np.float64), stored * slope + inter)
    write_image(image, tmp_path / "copy.nii.gz")
    assert nib.load(tmp_path / "copy.nii.gz").get_data_dtype() == dtype


def test_4d_nifti_keeps_its_time_step(tmp_path):
    source = os.path.join(NIB_DATA, "example4d.nii.gz")
    write_image(read_image(source), tmp_path / "copy.nii.gz")
    original, copy = nib.load(source).header, nib.load(tmp_path / "copy.nii.gz").header
    np.testing.assert_allclose(copy.get_zooms(), original.get_zooms(), rtol=1e-6)
    assert copy.get_xyzt_units() == original.get_xyzt_units()


def test_2d_colour_image_survives_nifti(tmp_path):
    colour = read_image(get_testdata_file("US1_UNCR.dcm"))
    assert colour.shape[0] == 3 and colour.ndim == 3
    write_image(colour, tmp_path / "us.nii.gz")
    assert nib.load(tmp_path / "us.nii.gz").shape == (*colour.shape[1:], 1, 1, 3)
    back = read_image(tmp_path / "us.nii.gz")
    assert back.shape == colour.shape
    np.testing.assert_array_equal(np.asarray(back), np.asarray(colour))
    np.testing.assert_allclose(np.asarray(back.affine), np.asarray(colour.affine))


def test_big_endian_8_bit_ow_pixels_match_pydicom():
    path = get_testdata_file("OBXXXX1A_expb.dcm")
    np.testing.assert_array_equal(np.asarray(read_image(path))[0].T, pydicom.dcmread(path).pixel_array)


def test_linked_folders_are_searched_once(tmp_path, real_series):
    target = tmp_path / "archive" / "ct"
    shutil.copytree(real_series("axial").folder, target)
    (tmp_path / "linked").mkdir()
    os.symlink(target, tmp_path / "linked" / "ct")
    os.symlink(tmp_path / "linked", tmp_path / "linked" / "loop")  # a cycle must not hang or repeat
    found, problems = find_images(tmp_path / "linked")
    assert [f.format for f in found] == ["dicom"] and not problems
    assert len(found[0].series.frames) == len(os.listdir(target))


def test_a_data_file_named_by_a_metaimage_header_is_not_a_dicom_candidate(tmp_path):
    voxels = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    (tmp_path / "volume.bin").write_bytes(voxels.tobytes())
    (tmp_path / "volume.mha").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementSpacing = 1 1 2\nElementType = MET_SHORT\n"
        "ElementByteOrderMSB = False\nElementDataFile = volume.bin\n"
    )
    found, problems = find_images(tmp_path)
    assert [f.source for f in found] == [str(tmp_path / "volume.mha")] and not problems


SLOW_WRITER = """
import sys, time
import medgan.io.atomic as atomic
from medgan.cli import main
original = atomic.atomic_file.__wrapped__
def slow(*args, **kwargs):
    generator = original(*args, **kwargs)
    temp = next(generator)
    open(temp, "wb").write(b"partial")
    print("writing", flush=True)
    time.sleep(60)
    yield temp
atomic.atomic_file = __import__("contextlib").contextmanager(slow)
import medgan.io.nifti as nifti
nifti.atomic_file = atomic.atomic_file
main(sys.argv[1:])
"""


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_mid_write_leaves_nothing(tmp_path, number):
    """A scheduler's time-out or a closed session unwinds like Ctrl-C: no hidden partial files."""
    output = tmp_path / "out"
    output.mkdir()
    source = os.path.join(NIB_DATA, "anatomical.nii")
    # as from a login shell: under `nohup` (SIGHUP ignored, which medgan then leaves alone) the child would
    # inherit the ignored signal and sleep on
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, "convert", source, str(output / "x.nii.gz")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: [signal.signal(n, signal.SIG_DFL) for n in (signal.SIGTERM, signal.SIGHUP)],
    )
    assert process.stdout.readline().strip() == "writing"
    assert any(name.endswith(".partial.nii.gz") for name in os.listdir(output))
    time.sleep(0.2)
    process.send_signal(number)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 128 + number
    assert err.strip() == f"medgan: error: stopped by {signal.Signals(number).name}"
    assert os.listdir(output) == []


def test_nifti_output_keeps_the_modality_in_a_sidecar(tmp_path, real_series):
    ct = read_image(real_series("axial").folder)
    write_image(ct, tmp_path / "ct.nii.gz")
    assert json.loads((tmp_path / "ct.json").read_text())["Modality"] == "CT"
    assert read_image(tmp_path / "ct.nii.gz").meta["modality"] == "CT"  # and so CT stays CT when read back
    (tmp_path / "other.json").write_text('{"Modality": "MR", "EchoTime": 0.01}')  # another tool's sidecar
    write_image(ct, tmp_path / "other.nii.gz")
    assert json.loads((tmp_path / "other.json").read_text()) == {"Modality": "MR", "EchoTime": 0.01}


def test_a_dicom_write_error_is_the_systems_words(tmp_path, monkeypatch):
    """pydicom re-raises an OSError with its own traceback as the message: the line keeps only the cause."""

    def full_disk(*args, **kwargs):
        try:
            raise OSError(27, "File too large")
        except OSError as err:
            raise OSError(f"With tag (7FE0,0010) got exception: {err}\nTraceback (most recent call last):") from err

    monkeypatch.setattr(pydicom.Dataset, "save_as", full_disk)
    image = read_image(os.path.join(NIB_DATA, "anatomical.nii"))
    with pytest.raises(OutputError) as info:
        write_image(image, tmp_path / "out", to="dicom", modality="MR")
    assert str(info.value) == f"{tmp_path / 'out'}: cannot write it (File too large)"
    assert os.listdir(tmp_path) == []
