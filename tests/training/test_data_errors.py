"""Bad training data ends in one line naming the file (and the CSV line), never in MONAI's wrapped
traceback; an unreadable file met while searching a folder is skipped with a warning."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
from test_cli_train import SHORT, one_line_error

from medgan.data.datasets import ScanDataset
from medgan.data.records import find_records
from medgan.errors import InputError

CT = "sample_data/ct_body_3d.nii.gz"  # the tests run from the repository root (conftest)
CT_2D = "sample_data/ct_body_2d.nii.gz"


def folder_with_a_corrupt_scan(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(CT, folder / "good.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"not a gzip stream")
    return folder


@pytest.mark.parametrize("cache", ["memory", "disk", "none"])
def test_an_unreadable_file_found_in_a_folder_is_skipped_with_a_warning(tmp_path, caplog, cache):
    folder = folder_with_a_corrupt_scan(tmp_path)
    with caplog.at_level(logging.WARNING, logger="medgan"):
        data = ScanDataset(find_records(str(folder)), image_size=[16, 16], spacing_mm=[16.0, 16.0],
                           window=(-1000.0, 1000.0), cache=cache, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    assert data.num_scans == 1 and data[(0, 0)]["image"].shape == (1, 16, 16)
    assert str(folder / "broken.nii.gz") in caplog.text and "skipped" in caplog.text
    os.remove(folder / "good.nii.gz")
    with pytest.raises(InputError, match="none of the 1 images found here can be read") as info:
        ScanDataset(find_records(str(folder)), image_size=[16, 16], cache=cache, cache_dir=str(tmp_path / "c2"))
    assert str(folder / "broken.nii.gz") in str(info.value)


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_a_csv_row_naming_a_missing_or_unreadable_file_is_an_error_naming_the_line(tmp_path, cache):
    folder = folder_with_a_corrupt_scan(tmp_path)
    (tmp_path / "missing.csv").write_text(f"image,label\n{os.path.abspath(CT)},0\nscans/gone.nii.gz,1\n")
    with pytest.raises(InputError, match=r"missing.csv: line 3: image .*gone.nii.gz: no such file"):
        find_records(str(tmp_path / "missing.csv"))
    (tmp_path / "bad.csv").write_text("image,label\nscans/good.nii.gz,0\nscans/broken.nii.gz,1\n")
    with pytest.raises(InputError) as info:
        ScanDataset(find_records(str(tmp_path / "bad.csv")), image_size=[16, 16], cache=cache)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'bad.csv'}: line 3: {folder / 'broken.nii.gz'}: not a readable NIfTI")
    assert len(message.splitlines()) == 1


def test_a_csv_row_naming_a_folder_of_two_series_says_how_to_choose(tmp_path, real_series):
    both = tmp_path / "both"
    both.mkdir()
    for variant in ("mr_sagittal", "axial"):
        for path in real_series(variant).files:
            os.symlink(path, both / f"{variant}_{os.path.basename(path)}")
    (tmp_path / "data.csv").write_text("image\nboth\n")
    with pytest.raises(InputError, match=r"data.csv: line 2: .*both: holds 2 series .* image_series CSV column"):
        ScanDataset(find_records(str(tmp_path / "data.csv")), image_size=[16, 16])


def test_negative_classes_in_a_csv_are_refused_naming_the_line(tmp_path):
    (tmp_path / "data.csv").write_text(f"image,label\n{os.path.abspath(CT)},0\n{os.path.abspath(CT)},-1\n")
    with pytest.raises(InputError, match="line 3: label -1 is negative"):
        find_records(str(tmp_path / "data.csv"))


def test_the_cli_shows_the_read_error_itself_in_one_line(run_cli, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(CT_2D, folder / "slice.nii.gz")
    shutil.copy(CT, folder / "volume.nii.gz")
    status, _, err = run_cli("train", "-c", "configs/debug_cpu_3d.yaml", "--set", f"data.source={folder}",
                             "--run-dir", tmp_path / "run", *SHORT)  # fmt: skip
    one_line_error(status, err, str(folder / "slice.nii.gz"), "a 2D image cannot feed 3D training")
    (tmp_path / "data.csv").write_text("image,label\nmixed/volume.nii.gz,0\nmixed/slice.nii.gz,1\n")
    (folder / "slice.nii.gz").write_bytes(b"\x1f\x8b truncated")
    source = f"data.source={tmp_path / 'data.csv'}"
    status, _, err = run_cli("train", "-c", "configs/debug_cpu_conditional.yaml", "--set", source,
                             "--run-dir", tmp_path / "run2", *SHORT)  # fmt: skip
    one_line_error(status, err, "data.csv: line 3:", str(folder / "slice.nii.gz"))
