"""A resumed run keeps the data it learned on, a finished run is left alone, and an output path that
cannot be a folder is refused before any data is read."""

from __future__ import annotations

import os

import yaml
from test_cli_train import SHORT, one_line_error

CONFIG = "configs/debug_cpu_unconditional.yaml"
CT = "data.source=sample_data/ct_body_3d.nii.gz"


def train_args(run_dir, *sets: str) -> list:
    return ["train", "-c", CONFIG, "--run-dir", run_dir, *SHORT, "--set", CT, *[a for s in sets for a in ("--set", s)]]


def test_resume_refuses_a_changed_intensity_window(run_cli, tmp_path):
    run = tmp_path / "run"
    status, _, err = run_cli(*train_args(run, "data.window=[-1000,1000]"))
    assert status == 0, err
    status, _, err = run_cli(*train_args(run, "data.window=[0,300]", "train.steps=4"), "--resume")
    one_line_error(status, err, "trained with the intensity window (data.window) [-1000.0, 1000.0]",
                   "now gives [0.0, 300.0]; set data.window=[-1000.0, 1000.0] to keep it")  # fmt: skip
    status, _, err = run_cli(*train_args(run, "data.window=[-1000,1000]", "train.steps=4"), "--resume")
    assert status == 0, err


def test_resuming_a_finished_run_trains_nothing_and_keeps_its_config(run_cli, tmp_path, caplog):
    run = tmp_path / "run"
    assert run_cli(*train_args(run, "train.steps=4"))[0] == 0
    before = (run / "config.yaml").read_text()
    status, _, err = run_cli(*train_args(run, "train.steps=2"), "--resume")
    assert status == 0, err
    assert "is already at step 4 (train.steps is 2): nothing to train" in caplog.text
    assert (run / "config.yaml").read_text() == before and yaml.safe_load(before)["train"]["steps"] == 4


def test_output_folders_that_cannot_be_made_are_refused_up_front(run_cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    status, _, err = run_cli(*train_args(tmp_path / "afile"))
    one_line_error(status, err, "afile: is a file, not a folder; choose another --run-dir")
    status, _, err = run_cli(*train_args(tmp_path / "afile" / "run"))
    one_line_error(status, err, "lies under a file")
    status, _, err = run_cli(*train_args(tmp_path / "run", f"data.cache_dir={tmp_path / 'afile' / 'cache'}"))
    one_line_error(status, err, "choose another data.cache_dir")
    assert not os.path.exists(tmp_path / "run")


def test_resume_after_the_class_count_changed_names_the_parameter(run_cli, tmp_path):
    repo = os.getcwd()
    (tmp_path / "two.csv").write_text(f"image,label\n{repo}/sample_data/ct_body_3d.nii.gz,0\n"
                                      f"{repo}/sample_data/mr_brain_3d.nii.gz,1\n")  # fmt: skip
    (tmp_path / "three.csv").write_text(
        (tmp_path / "two.csv").read_text() + f"{repo}/sample_data/ct_body_3d.nii.gz,2\n"
    )
    base = ["train", "-c", "configs/debug_cpu_conditional.yaml", "--run-dir", tmp_path / "run", *SHORT, "--set",
            "data.window=[-1000,1000]"]  # fmt: skip
    assert run_cli(*base, "--set", f"data.source={tmp_path / 'two.csv'}")[0] == 0
    status, _, err = run_cli(*base, "--set", f"data.source={tmp_path / 'three.csv'}", "--set", "train.steps=4",
                             "--resume")  # fmt: skip
    one_line_error(
        status, err, "the checkpoint does not fit these networks: G.", "is [2, ", "in the checkpoint but [3, "
    )


def test_classes_without_scans_are_warned_about(tmp_path, caplog):
    from medgan.data.datasets import ScanDataset
    from medgan.data.records import find_records

    repo = os.getcwd()
    (tmp_path / "one_based.csv").write_text(f"image,label\n{repo}/sample_data/ct_body_3d.nii.gz,1\n"
                                            f"{repo}/sample_data/mr_brain_3d.nii.gz,2\n")  # fmt: skip
    ScanDataset(find_records(str(tmp_path / "one_based.csv")), image_size=[16, 16], spacing_mm=[16.0, 16.0])
    assert "class 0 has no scans" in caplog.text


def test_a_size_the_networks_cannot_take_fails_before_the_data_is_read(run_cli, tmp_path):
    """The networks are built on the meta device first, so the size error comes before the (missing) data."""
    status, _, err = run_cli(*train_args(tmp_path / "run", f"data.source={tmp_path / 'not_there'}",
                                         "data.image_size=[20,20]"))  # fmt: skip
    one_line_error(status, err, "cannot produce image_size (20, 20)", "for 20 use 16 or 32")
    status, _, err = run_cli(*train_args(tmp_path / "run", f"data.source={tmp_path / 'not_there'}"))
    one_line_error(status, err, "not_there")


def test_dry_run_checks_the_networks(run_cli):
    status, _, err = run_cli("train", "-c", CONFIG, "--set", "generator.name=resgan", "--dry-run")
    one_line_error(status, err, "unknown generator 'resgan'; did you mean 'resgen'?")
    status, _, err = run_cli("train", "-c", CONFIG, "--set", "data.image_size=[20,20]", "--dry-run")
    one_line_error(status, err, "cannot produce image_size (20, 20)")


def test_scans_of_different_orientations_are_warned_about(tmp_path, real_series, caplog):
    """Scans drawn from noise carry one orientation: a mix of axial and oblique series is said."""
    import logging

    from medgan.data.datasets import ScanDataset
    from medgan.data.records import find_records

    for variant in ("axial", "oblique"):
        os.symlink(real_series(variant).folder, tmp_path / variant)
    with caplog.at_level(logging.WARNING, logger="medgan"):
        ScanDataset(find_records(str(tmp_path)), image_size=[16, 16], spacing_mm=[16.0, 16.0], cache="none")
    assert "the training scans differ in orientation (1 of 2 differ from" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medgan"):
        ScanDataset(find_records(str(tmp_path / "axial")), image_size=[16, 16], spacing_mm=[16.0, 16.0], cache="none")
    assert "differ in orientation" not in caplog.text
