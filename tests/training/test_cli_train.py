"""`medgan train` from the command line: bad input ends in one line and exit 2; torchrun with two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from medgan.tasks.checkpoint import checkpoint_paths, load_checkpoint
from medgan.training.objectives.latent import LatentGAN

CONFIG = "configs/debug_cpu_unconditional.yaml"
SHORT = ("--set", "train.steps=2", "--set", "train.log_every_steps=2", "--set", "train.sample_every_steps=2",
         "--set", "train.batch_size=2", "--set", "train.num_samples=2")  # fmt: skip


def one_line_error(status: int, err: str, *expected: str) -> None:
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("medgan: error: "), err
    for text in expected:
        assert text in lines[0], lines[0]


def no_partial_files(run_dir) -> None:
    for _, _, files in os.walk(run_dir):
        assert not any(".partial" in name for name in files), files


def test_dry_run_prints_the_resolved_config(run_cli):
    status, out, _ = run_cli("train", "-c", CONFIG, "--set", "train.steps=7", "--dry-run")
    assert status == 0 and "steps: 7" in out and "task: unconditional" in out


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["generator.name=resgan"], ["unknown generator 'resgan'", "did you mean 'resgen'"]),
        (["discriminator.name=patchgen"], ["unknown discriminator", "patchgan"]),
        (["data.image_size=[20,20]"], ["image_size", "4 * 2^n"]),  # a latent generator cannot make 20x20
        (["task=pix2pix2"], ["unknown task", "pix2pix"]),
        (["generator.options.channels=8"], ["no argument 'channels'"]),
        (["augment.ops=[hue]"], ["unknown augmentation 'hue'"]),
        # Options of another task are refused by name, with the ones this task takes (they were dropped before).
        (["loss.cycle_weight=5"], ["unknown key 'loss.cycle_weight'", "valid keys: gan, r1_gamma"]),
    ],
)
def test_bad_config_is_one_line_and_exit_2(run_cli, tmp_path, overrides, expected):
    args = [a for o in overrides for a in ("--set", o)]
    status, _, err = run_cli("train", "-c", CONFIG, "--run-dir", tmp_path / "run", *SHORT, *args)
    one_line_error(status, err, *expected)
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["loss.perceptual_weight=1"], ["perceptual_network"]),
        (["loss.perceptual_weight=1", "loss.perceptual_network=missing.pt"], ["missing.pt", "feature network"]),
        (["loss.cycle_weight=5"], ["unknown key 'loss.cycle_weight'", "reconstruction_weight", "perceptual_network"]),
    ],
)
def test_a_task_option_that_does_not_fit_is_one_line_and_exit_2(run_cli, tmp_path, phantom_pairs, overrides,
                                                                  expected):  # fmt: skip
    args = [a for o in (f"data.source={phantom_pairs}", *overrides) for a in ("--set", o)]
    status, _, err = run_cli("train", "-c", "configs/debug_cpu_pix2pix.yaml", "--run-dir", tmp_path / "run", *SHORT,
                             *args)  # fmt: skip
    one_line_error(status, err, *expected)
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_a_patch_discriminator_too_deep_for_the_image_is_caught_up_front(run_cli, tmp_path, phantom_pairs):
    status, _, err = run_cli(
        "train",
        "-c",
        "configs/debug_cpu_pix2pix.yaml",
        "--run-dir",
        tmp_path,
        *SHORT,
        "--set",
        f"data.source={phantom_pairs}",
        "--set",
        "discriminator.options.num_layers=5",
    )
    one_line_error(status, err, "patchgan")


def test_a_folder_without_scans_is_one_line(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    status, _, err = run_cli("train", "-c", CONFIG, "--run-dir", tmp_path / "run", "--set",
                             f"data.source={tmp_path / 'empty'}")  # fmt: skip
    one_line_error(status, err, "no readable", "data.source")


def test_resume_refuses_another_architecture_and_a_corrupted_checkpoint(run_cli, tmp_path):
    run = tmp_path / "run"
    status, out, _ = run_cli("train", "-c", CONFIG, "--run-dir", run, *SHORT)
    assert status == 0 and out.strip() == str(run)
    status, _, err = run_cli("train", "-c", CONFIG, "--run-dir", run, "--resume", *SHORT, "--set",
                             "generator.options.base_channels=8")  # fmt: skip
    one_line_error(status, err, "checkpoint was trained with generator", "start a new --run-dir")
    status, _, err = run_cli("train", "-c", CONFIG, "--run-dir", run, *SHORT)  # not --resume: refuse to overwrite
    one_line_error(status, err, "--resume")
    path = checkpoint_paths(str(run))[-1]
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
    status, _, err = run_cli("train", "--run-dir", run, "--resume", "--set", "train.steps=4")  # its own config.yaml
    one_line_error(status, err, "not a readable medgan checkpoint")
    status, _, err = run_cli("synthesize", "--checkpoint", path, "-n", "1", "--out", tmp_path / "out")
    one_line_error(status, err, "not a readable medgan checkpoint")
    no_partial_files(tmp_path)


def test_out_of_gpu_memory_suggests_what_to_change(run_cli, tmp_path, monkeypatch):
    def no_memory(self, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(LatentGAN, "generate", no_memory)
    status, _, err = run_cli("train", "-c", CONFIG, "--run-dir", tmp_path, *SHORT)
    one_line_error(status, err, "out of GPU memory", "train.batch_size", "bf16")
    assert checkpoint_paths(str(tmp_path)) == []


def test_torchrun_with_two_gloo_processes_trains_and_writes_one_checkpoint(tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "medgan", "train", "-c", CONFIG, "--run-dir", str(run), *SHORT,
               "--set", "train.steps=4", "--set", "train.checkpoint_every_steps=4"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(run)  # printed once, by rank 0
    assert [os.path.basename(p) for p in checkpoint_paths(str(run))] == ["step_0000004.pt"]
    state = load_checkpoint(checkpoint_paths(str(run))[0])
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    noise = [r["objective"]["noise"] for r in state["ranks"]]
    assert not torch.equal(noise[0], noise[1])  # each rank drew its own latents
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4] and records[0]["images_seen"] == 8  # 2 steps x 2 per rank x 2 ranks
    no_partial_files(run)
