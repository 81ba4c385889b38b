"""Enhancement training: pairs simulated on the device (data.degrade), scores on held-out pairs (data.validation)."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medgan.config import load_config
from medgan.data.degradations import DEGRADATIONS
from medgan.data.transforms import from_unit
from medgan.tasks import TASKS
from medgan.tasks.checkpoint import checkpoint_paths, load_checkpoint
from medgan.tasks.config import TrainConfig
from medgan.training import build, train
from medgan.training.pairs import SimulatedPairs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENHANCE_CONFIGS = sorted(os.path.basename(p)[:-5] for p in glob.glob(f"{REPO}/configs/debug_cpu_enhance_*.yaml"))
QUICK = ("train.steps=2", "train.log_every_steps=2", "train.sample_every_steps=2", "train.checkpoint_every_steps=2",
         "train.validate_every_steps=2", "train.batch_size=2", "train.num_samples=2",
         "train.tensorboard=false")  # fmt: skip
SMALL_2D = ("data.image_size=[32,32]", "data.spacing_mm=[8.0,8.0]")


def config(name: str, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, f"{REPO}/configs/{name}.yaml", list(overrides))


def test_the_enhancement_twins_are_found():
    assert {"debug_cpu_enhance_ct_lowdose_2d", "debug_cpu_enhance_ct_lowdose_3d", "debug_cpu_enhance_mr_sr_3d"} <= set(
        ENHANCE_CONFIGS
    )


@pytest.mark.parametrize("name", ENHANCE_CONFIGS)
def test_every_enhancement_twin_trains_on_simulated_pairs_and_scores_its_held_out_scans(name, tmp_path):
    cfg = config(name, *QUICK)
    run = train(cfg, run_dir=str(tmp_path / "run"))
    with open(os.path.join(run, "stats.jsonl")) as fh:
        lines = [json.loads(line) for line in fh]
    assert lines[0]["loss_rec"] > 0  # pix2pix's reconstruction term, on made-up sources
    if cfg.data.validation:
        scores = next(r for r in lines if "val_psnr" in r)
        assert scores["step"] == 2 and np.isfinite(scores["val_psnr"]) and 0 < scores["val_ssim"] <= 1
        assert scores["val_input_mae"] > 0  # the degraded inputs differ from their targets
        assert os.path.isfile(os.path.join(run, "samples", "val_step_0000002.png"))
    record = load_checkpoint(checkpoint_paths(run)[-1])["data_record"]
    assert record["source_window"] == record["window"]  # the degraded input is windowed like its image


def test_simulated_pairs_resume_bit_for_bit(tmp_path):
    common = (*QUICK, *SMALL_2D, "train.checkpoint_every_steps=2", "train.keep_checkpoints=5", "data.validation=null")
    train(config("debug_cpu_enhance_ct_lowdose_2d", *common, "train.steps=4"), run_dir=str(tmp_path / "straight"))
    train(config("debug_cpu_enhance_ct_lowdose_2d", *common, "train.steps=2"), run_dir=str(tmp_path / "resumed"))
    train(config("debug_cpu_enhance_ct_lowdose_2d", *common, "train.steps=4"), run_dir=str(tmp_path / "resumed"),
          resume=True)  # fmt: skip
    straight, resumed = (load_checkpoint(checkpoint_paths(str(tmp_path / r))[-1]) for r in ("straight", "resumed"))
    assert straight["ranks"][0]["pairs"]["generator"].shape[0] > 0  # the record generator is checkpointed
    for name, tensor in straight["networks"]["G"].items():
        assert torch.equal(tensor, resumed["networks"]["G"][name]), name


def test_simulated_pairs_degrade_in_physical_units_then_window_and_replay_by_seed():
    lowdose = DEGRADATIONS.build("ct-lowdose", dose=0.05)
    pairs = SimulatedPairs(lowdose, "source", (-1000.0, 1000.0), (-1000.0, 1000.0), [2.0, 2.0], seed=3)
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    body = ((yy - 23.5) ** 2 + (xx - 23.5) ** 2 <= 20**2).float()
    hu = (body * 1040.0 - 1000.0)[None, None].repeat(2, 1, 1, 1)  # water cylinders in air, in HU
    out = pairs({"image": hu})
    assert torch.allclose(out["image"], (hu + 1000.0) / 1000.0 - 1.0)  # the clean image, windowed
    inside = body.bool()[None, None].expand_as(hu)
    noise_hu = (from_unit(out["source"], -1000, 1000) - from_unit(out["image"], -1000, 1000))[inside]
    assert 5.0 < noise_hu.std().item() < 500.0 and abs(noise_hu.mean().item()) < 10.0  # CT noise, mean kept
    fixed = pairs({"image": hu}, torch.Generator().manual_seed(7))
    assert torch.equal(fixed["source"], pairs({"image": hu}, torch.Generator().manual_seed(7))["source"])
    assert not torch.equal(out["source"], pairs({"image": hu})["source"])  # the run's own stream moves on


def test_validation_scores_agree_with_scikit_image_and_a_do_nothing_generator_scores_as_its_input(tmp_path):
    cfg = config("debug_cpu_enhance_ct_lowdose_2d", *SMALL_2D)
    task = TASKS.get("pix2pix")
    dataset = build.build_dataset(cfg.data, task, str(tmp_path / "cache"))
    record = dataset.record
    simulate = build.make_simulator(cfg, task, record, seed=0)
    validate = build.make_validator(cfg, task, record, str(tmp_path / "cache"), simulate, torch.device("cpu"),
                                    torch.contiguous_format)  # fmt: skip
    scores, rows = validate(torch.nn.Identity())
    for name in ("psnr", "ssim", "mae"):
        assert scores[f"val_{name}"] == pytest.approx(scores[f"val_input_{name}"], rel=1e-5)
    target = from_unit(validate.batch["image"], *record["window"]).numpy()[0, 0].astype(np.float64)
    test = from_unit(validate.batch["source"], *record["window"]).numpy()[0, 0].astype(np.float64)
    width = record["window"][1] - record["window"][0]
    assert scores["val_input_psnr"] == pytest.approx(peak_signal_noise_ratio(target, test, data_range=width), rel=1e-4)
    reference_ssim = structural_similarity(target, test, data_range=width, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False)  # fmt: skip
    assert scores["val_input_ssim"] == pytest.approx(reference_ssim, abs=1e-4)
    assert len(rows) == 4 and rows[0].shape == rows[1].shape  # input | output | target | error


@pytest.mark.parametrize(
    ("name", "overrides", "expected"),
    [
        ("debug_cpu_unconditional", ["data.degrade={kind: ct-lowdose}"], "which task unconditional does not take"),
        ("debug_cpu_cyclegan", ["data.validation=sample_data"], "task cyclegan has none"),
        ("debug_cpu_enhance_ct_lowdose_2d", ["data.degrade.kind=ct-lowdos"], "did you mean 'ct-lowdose'"),
        ("debug_cpu_enhance_ct_lowdose_2d", ["data.degrade.params={dose: 3}"], "dose = 3 is out of range"),
    ],
)
def test_enhancement_settings_that_cannot_work_are_one_line_errors(run_cli, tmp_path, name, overrides, expected):
    args = [a for o in overrides for a in ("--set", o)]
    status, _, err = run_cli("train", "-c", f"{REPO}/configs/{name}.yaml", "--run-dir", str(tmp_path / "run"), *args)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and expected in lines[0], err
    assert not os.path.exists(tmp_path / "run")


def test_a_csv_that_names_sources_beside_data_degrade_is_refused(run_cli, tmp_path, phantom_pairs):
    status, _, err = run_cli("train", "-c", f"{REPO}/configs/debug_cpu_enhance_ct_lowdose_2d.yaml", "--run-dir",
                             str(tmp_path / "run"), "--set", f"data.source={phantom_pairs}")  # fmt: skip
    assert status == 2 and "data.degrade makes the 'source' images, but the CSV names them too" in err, err


def test_pairs_cut_into_tissue_patches_after_degrading_the_whole_sample(tmp_path):
    lowdose = DEGRADATIONS.build("ct-lowdose", dose=0.1)
    whole = SimulatedPairs(lowdose, "source", (-1000.0, 1000.0), (-1000.0, 1000.0), [2.0, 2.0], seed=1)
    patched = SimulatedPairs(lowdose, "source", (-1000.0, 1000.0), (-1000.0, 1000.0), [2.0, 2.0], seed=1,
                             patch_size=[16, 16], patches_per_sample=2)  # fmt: skip
    hu = torch.full((3, 1, 64, 64), -1000.0)
    hu[:, :, 40:56, 8:30] = 40.0  # a small block of tissue in air
    full = whole({"image": hu})
    cut = patched({"image": hu, "label": torch.arange(3)})
    assert cut["image"].shape == cut["source"].shape == (6, 1, 16, 16)  # two patches of each sample
    assert torch.equal(cut["label"], torch.tensor([0, 0, 1, 1, 2, 2]))  # its class goes with each
    assert ((cut["image"] > -0.9).flatten(1).any(1)).all()  # every patch holds tissue
    for patch in range(6):  # each patch is a cut of the pair degraded whole (same records, same noise)
        windows = full["source"][patch // 2, 0].unfold(0, 16, 1).unfold(1, 16, 1)
        assert (windows == cut["source"][patch, 0]).flatten(2).all(-1).any()
    assert patched({"image": hu}, whole=True)["image"].shape == (3, 1, 64, 64)  # validation and previews: whole


def test_a_patch_larger_than_the_sample_is_one_line(run_cli, tmp_path):
    status, _, err = run_cli("train", "-c", f"{REPO}/configs/debug_cpu_enhance_ct_lowdose_2d.yaml", "--run-dir",
                             str(tmp_path / "run"), "--set", "data.degrade.patch_size=[128,128]")  # fmt: skip
    assert status == 2 and "patch_size [128, 128] needs 2 sizes, each from 1 to data.image_size [64, 64]" in err
