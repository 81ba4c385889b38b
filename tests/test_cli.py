"""The command line: thin commands, JSON info, one-line errors with exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medgan import __version__
from medgan.cli import main
from medgan.io import read_image, write_image
from medgan.io.image import make_image

AFFINE = np.array([[-0.7, 0, 0, 90.0], [0, -0.7, 0, 80.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])


def run(args, capsys):
    """Run the CLI; return (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main([*args])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


@pytest.fixture
def volume():
    data = (np.arange(8 * 7 * 6, dtype=np.int16).reshape(1, 8, 7, 6) * 3) - 1000
    return make_image(data, AFFINE, {"modality": "CT"})


def test_info_json_describes_nifti_and_dicom(tmp_path, capsys, volume):
    write_image(volume, tmp_path / "a.nii.gz")
    write_image(volume, tmp_path / "series", to="dicom")
    status, out, err = run(["info", str(tmp_path), "--json"], capsys)
    assert status == 0, err
    records = {r["format"]: r for r in json.loads(out)}
    assert set(records) == {"nifti", "dicom"}
    for record in records.values():
        assert record["shape"] == [8, 7, 6]
        assert record["spacing_mm"] == pytest.approx([0.7, 0.7, 2.5])
        assert record["orientation"] == "LPS"
        assert record["origin_mm"] == pytest.approx([90.0, 80.0, -40.0])
        assert record["range"] == [-1000, -1000 + 3 * (8 * 7 * 6 - 1)]
        assert record["slices"] == 6
    assert records["dicom"]["modality"] == "CT"
    assert records["dicom"]["series_uid"] and records["dicom"]["files"] == 6
    assert records["nifti"]["series_uid"] is None


def test_info_headers_only_skips_pixels(tmp_path, capsys, volume):
    write_image(volume, tmp_path / "series", to="dicom")
    status, out, _ = run(["info", str(tmp_path / "series"), "--json", "--headers-only"], capsys)
    (record,) = json.loads(out)
    assert status == 0 and record["range"] is None and record["shape"] == [8, 7, 6]


def test_info_table_never_shows_patient_identity(tmp_path, capsys, volume):
    volume.meta["patient"] = {"PatientName": "Doe^Jane", "PatientID": "MRN-12345"}
    write_image(volume, tmp_path / "series", to="dicom", copy_patient=True)
    status, out, err = run(["info", str(tmp_path / "series")], capsys)
    assert status == 0
    assert "LPS" in out and "0.7 x 0.7 x 2.5 mm" in out
    assert "Doe" not in out + err and "MRN-12345" not in out + err


def test_convert_between_volume_formats(tmp_path, capsys, volume):
    source = write_image(volume, tmp_path / "a.nii.gz")
    status, out, _ = run(["convert", source, str(tmp_path / "b.nrrd")], capsys)
    assert status == 0 and out.strip() == str(tmp_path / "b.nrrd")
    back = read_image(tmp_path / "b.nrrd")
    np.testing.assert_array_equal(back.numpy(), volume.numpy())
    np.testing.assert_allclose(back.affine.numpy(), AFFINE, atol=1e-9)


def test_convert_to_dicom_needs_a_modality_when_the_source_has_none(tmp_path, capsys, volume):
    volume.meta["modality"] = ""
    source = write_image(volume, tmp_path / "a.nii")
    status, _, err = run(["convert", source, str(tmp_path / "dcm"), "--to", "dicom"], capsys)
    assert status == 2 and "--modality" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "dcm").exists()
    status, _, _ = run(["convert", source, str(tmp_path / "dcm"), "--to", "dicom", "--modality", "mr"], capsys)
    assert status == 0 and read_image(tmp_path / "dcm").meta["modality"] == "MR"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["info"], "Missing argument"),
        (["info", "x", "--bogus"], "No such option"),
        (["convert", "a.nii", "b.nii", "--modality", "CT"], "need --to dicom"),
        (["frobnicate"], "No such command"),
        (["convert", "a.nii", "b.nii", "--to", "png"], "Invalid value"),
    ],
)
def test_usage_errors_are_one_line(capsys, args, needle):
    status, _, err = run(args, capsys)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("medgan: error:") and needle in err
    assert "Traceback" not in err


def test_version_and_help(capsys):
    status, out, _ = run(["--version"], capsys)
    assert status == 0 and __version__ in out
    for command, option in (("info", "--headers-only"), ("convert", "--allow-gaps")):
        status, out, _ = run([command, "--help"], capsys)
        assert status == 0 and option in out
