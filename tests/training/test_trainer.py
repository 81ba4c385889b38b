"""The loop: it learns, it resumes bit for bit, every task trains, and it stops cleanly on NaN."""

from __future__ import annotations

import glob
import json
import os

import pytest
import torch

from medgan.data.datasets import ScanDataset
from medgan.data.records import find_records
from medgan.models import build_discriminator, build_generator
from medgan.tasks import TASKS
from medgan.tasks.checkpoint import checkpoint_paths, load_checkpoint
from medgan.training import losses, train
from medgan.training.events import read_events
from medgan.training.logging import TrainingDiverged
from medgan.training.objectives import OBJECTIVES
from medgan.training.precision import requires_grad, step

QUIET = ("train.log_every_steps=2", "train.sample_every_steps=100", "train.tensorboard=true")


def test_a_few_steps_lower_the_losses_on_a_fixed_batch(phantom_pairs):
    PIX2PIX = TASKS.get("pix2pix").inputs
    torch.manual_seed(0)
    data = ScanDataset(find_records(phantom_pairs, PIX2PIX), PIX2PIX, image_size=[16, 16],
                       spacing_mm=[16.0, 16.0],
                       window=(-1000.0, 1000.0), source_window=(-1000.0, 1000.0))  # fmt: skip
    batch = torch.utils.data.default_collate([data[(i, 0)] for i in range(4)])
    nets = {"G": build_generator("unet", in_channels=1, channels=8, max_channels=16, depth=3),
            "D": build_discriminator("patchgan", in_channels=2, channels=8, num_layers=2)}  # fmt: skip
    objective = OBJECTIVES.build("pix2pix", nets=nets)
    g_opt = torch.optim.Adam(nets["G"].parameters(), lr=2e-3, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(nets["D"].parameters(), lr=2e-3, betas=(0.5, 0.999))
    history = []
    for _ in range(25):
        fakes = objective.generate(batch)
        d_loss, d_stats = objective.d_loss(batch, fakes)
        step(d_opt, d_loss, list(nets["D"].parameters()))
        with requires_grad([nets["D"]], False):
            g_loss, g_stats = objective.g_loss(batch, fakes)
            step(g_opt, g_loss, list(nets["G"].parameters()))
        history.append((d_stats["loss_d"].item(), g_stats["loss_rec"].item()))
    assert history[-1][1] < 0.5 * history[0][1]  # the generator approaches the paired targets
    assert min(d for d, _ in history[-5:]) < history[0][0]  # and the discriminator separates real from fake


def _tensors_equal(a, b, path="") -> list[str]:
    if isinstance(a, dict):
        return [d for k in a for d in _tensors_equal(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list | tuple):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _tensors_equal(x, y, f"{path}[{i}]")]
    if isinstance(a, torch.Tensor):
        return [] if torch.equal(a, b) else [path]
    return [] if a == b else [path]


@pytest.mark.parametrize("task", OBJECTIVES.names())
def test_two_n_steps_equal_n_then_resume_then_n(task, tiny_config, tmp_path):
    common = (*QUIET, "train.checkpoint_every_steps=5", "augment.ada_interval_steps=3", "train.keep_checkpoints=5",
              "augment.ops=[flip,rot90,translate,scale,cutout,intensity]", "augment.p=0.3", "augment.ada_target=0.5",
              "augment.ada_speed_images=200", "loss.r1_gamma=0.5", "loss.r1_interval_steps=3",
              "optim.lr_decay_start=null")  # the schedule depends on train.steps; keep it flat  # fmt: skip
    train(tiny_config(task, *common, "train.steps=10"), run_dir=str(tmp_path / "straight"))
    train(tiny_config(task, *common, "train.steps=5"), run_dir=str(tmp_path / "resumed"))
    train(tiny_config(task, *common, "train.steps=10"), run_dir=str(tmp_path / "resumed"), resume=True)
    straight = load_checkpoint(checkpoint_paths(str(tmp_path / "straight"))[-1])
    resumed = load_checkpoint(checkpoint_paths(str(tmp_path / "resumed"))[-1])
    assert straight["step"] == resumed["step"] == 10
    keys = ("networks", "ema", "optimizers", "ranks")
    assert _tensors_equal({k: straight[k] for k in keys}, {k: resumed[k] for k in keys}) == []
    if task == "cyclegan":  # the history of fakes came back and went on identically
        assert len(straight["ranks"][0]["objective"]["pools"]["fake_a"]["images"]) > 0
    if task == "unconditional":
        assert straight["ranks"][0]["augment"]["p"] > 0  # ADA moved p, and the resumed run moved it the same way
        # sessions.jsonl: a line per start or resume, with what `auto` resolved to on that machine
        sessions = [[json.loads(line) for line in (tmp_path / run / "sessions.jsonl").read_text().splitlines()]
                    for run in ("straight", "resumed")]  # fmt: skip
        assert [[s["step"] for s in run] for run in sessions] == [[0], [0, 5]]
        assert {(s["device"], s["precision"], s["processes"]) for run in sessions for s in run} == {("cpu", "fp32", 1)}
        assert all(s["hardware"].endswith(f"({torch.backends.cpu.get_cpu_capability()})") for s in sessions[1])


def test_a_time_limit_stops_with_a_checkpoint_and_resume_finishes_as_if_uninterrupted(
    tiny_config, tmp_path, monkeypatch
):
    import medgan.training.stopping as stopping

    common = (*QUIET, "train.checkpoint_every_steps=100", "optim.lr_decay_start=null")
    train(tiny_config("unconditional", *common, "train.steps=9"), run_dir=str(tmp_path / "straight"))
    clock = {"now": 0.0}

    def tick() -> float:  # every reading of the clock is one second later
        clock["now"] += 1.0
        return clock["now"]

    monkeypatch.setattr(stopping, "clock", tick)
    limited = tiny_config("unconditional", *common, "train.steps=9", "train.time_limit_minutes=0.06")  # 3.6 s
    train(limited, run_dir=str(tmp_path / "limited"))
    stopped = [os.path.basename(p) for p in checkpoint_paths(str(tmp_path / "limited"))]
    assert stopped == ["step_0000004.pt"]  # the set-up reads the clock once, then once per step
    with open(tmp_path / "limited" / "stats.jsonl") as fh:
        assert [json.loads(line)["step"] for line in fh] == [2, 4]
    monkeypatch.undo()
    train(tiny_config("unconditional", *common, "train.steps=9"), run_dir=str(tmp_path / "limited"), resume=True)
    straight = load_checkpoint(checkpoint_paths(str(tmp_path / "straight"))[-1])
    resumed = load_checkpoint(checkpoint_paths(str(tmp_path / "limited"))[-1])
    assert straight["step"] == resumed["step"] == 9
    assert _tensors_equal(straight["networks"], resumed["networks"]) == []


def test_sigterm_from_a_scheduler_stops_at_that_step_with_a_checkpoint_and_the_handler_is_put_back(
    tiny_config, tmp_path, monkeypatch
):
    import signal

    import medgan.training.trainer as trainer

    class Interrupted(trainer.Stats):
        def add(self, step, values):
            super().add(step, values)
            if step == 3:  # the scheduler's signal arrives during step 3
                os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(trainer, "Stats", Interrupted)
    before = signal.getsignal(signal.SIGTERM)
    train(tiny_config("unconditional", *QUIET, "train.steps=9", "train.checkpoint_every_steps=100"),
          run_dir=str(tmp_path))  # fmt: skip
    assert [os.path.basename(p) for p in checkpoint_paths(str(tmp_path))] == ["step_0000003.pt"]
    assert signal.getsignal(signal.SIGTERM) is before
    monkeypatch.undo()
    train(tiny_config("unconditional", *QUIET, "train.steps=9"), run_dir=str(tmp_path), resume=True)
    assert load_checkpoint(checkpoint_paths(str(tmp_path))[-1])["step"] == 9


@pytest.mark.parametrize("task", [*OBJECTIVES.names(), "3d"])
def test_every_debug_config_trains_and_fills_its_run_folder(task, tiny_config, tmp_path):
    run = train(tiny_config(task, *QUIET, "train.steps=2", "train.sample_every_steps=2", "train.batch_size=2",
                            "train.num_samples=2"), run_dir=str(tmp_path / "run"))  # fmt: skip
    names = sorted(os.listdir(run))
    assert {"config.yaml", "stats.jsonl", "samples", "checkpoints"} <= set(names)
    with open(os.path.join(run, "stats.jsonl")) as fh:
        lines = [json.loads(line) for line in fh]
    assert [r["step"] for r in lines] == [2] and lines[0]["loss_d"] == lines[0]["loss_d"]  # finite
    events = read_events(os.path.join(run, next(n for n in names if n.startswith("events.out.tfevents"))))
    assert any("loss_g" in e["scalars"] for e in events) and any(e["images"] for e in events)
    state = load_checkpoint(checkpoint_paths(run)[-1])
    assert state["format_version"] == 1 and state["config"]["task"] == tiny_config(task).task


def test_every_registered_task_has_a_cpu_config_that_trains_it():
    """A task lands with its tiny CPU config (configs/debug_cpu_<task>.yaml), which the tests above train."""
    from medgan.config import read_yaml

    for name in OBJECTIVES.names():
        path = f"configs/debug_cpu_{name}.yaml"
        assert os.path.isfile(path), f"task {name} has no CPU config {path}"
        assert read_yaml(path)["task"] == name and read_yaml(path)["train"]["device"] == "cpu"
    assert set(OBJECTIVES.names()) == set(TASKS.names())  # every declared task can be trained


def test_a_nan_loss_stops_the_run_naming_the_step_and_writes_no_later_checkpoint(tiny_config, tmp_path, monkeypatch):
    real_g_loss = losses.g_loss
    calls = {"n": 0}

    def poisoned(kind, logits):
        calls["n"] += 1
        loss = real_g_loss(kind, logits)
        return loss * float("nan") if calls["n"] > 3 else loss  # from the 4th step on

    monkeypatch.setattr(losses, "g_loss", poisoned)
    cfg = tiny_config("unconditional", *QUIET, "train.steps=8", "train.log_every_steps=4",
                      "train.checkpoint_every_steps=2")  # fmt: skip
    with pytest.raises(TrainingDiverged, match=r"loss_g became NaN or infinite at step 4"):
        train(cfg, run_dir=str(tmp_path))
    assert [os.path.basename(p) for p in checkpoint_paths(str(tmp_path))] == ["step_0000002.pt"]


def test_a_fresh_start_in_a_folder_without_checkpoints_drops_the_old_stats_and_sessions(tiny_config, tmp_path):
    """What a run that failed before its first checkpoint logged does not mix with the new run's lines."""
    for name in ("stats.jsonl", "sessions.jsonl"):
        (tmp_path / name).write_text(json.dumps({"step": 99, "stale": True}) + "\n")
    train(tiny_config("unconditional", *QUIET, "train.steps=2"), run_dir=str(tmp_path))
    for name in ("stats.jsonl", "sessions.jsonl"):
        lines = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        assert lines and not any(line.get("stale") for line in lines), name
    assert [json.loads(line)["step"] for line in (tmp_path / "sessions.jsonl").read_text().splitlines()] == [0]


CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
GPU_CONFIGS = sorted(
    os.path.basename(p)[:-5] for p in glob.glob(os.path.join(CONFIGS, "*.yaml"))
    if not os.path.basename(p).startswith(("debug_cpu_", "phantom_", "anonymize_"))
)  # fmt: skip


def test_the_gpu_configs_are_found():
    assert {"synth2d_256", "synth2d_64", "synth3d_128", "label2image_256", "pix2pix_256", "cyclegan_256",
            "enhance_ct_lowdose_2d", "enhance_mr_sr_3d"} <= set(GPU_CONFIGS)  # fmt: skip


@pytest.mark.parametrize("name", GPU_CONFIGS)
def test_gpu_configs_validate_and_their_networks_take_their_image_size(name):
    from medgan.config import load_config
    from medgan.tasks.config import TrainConfig
    from medgan.tasks.networks import build_task_networks

    cfg = load_config(TrainConfig, f"configs/{name}.yaml")
    record = {"channels": 1, "num_classes": 0, "num_labels": 8, "domain_b": {"channels": 1}}
    with torch.device("meta"):  # shapes only: no memory for full-size weights
        nets = build_task_networks(cfg, record, batch_size=cfg.train.batch_size)
    assert set(nets) == set(TASKS.get(cfg.task).roles)


def test_variants_wgan_gp_bf16_channels_last_disk_cache_and_workers(tiny_config, tmp_path):
    cfg = tiny_config("unconditional", *QUIET, "train.steps=2", "loss.gan=wgan-gp", "train.precision=bf16",
                      "train.channels_last=true", "data.cache=disk", f"data.cache_dir={tmp_path / 'cache'}",
                      "data.num_workers=1", "optim.grad_clip_norm=1.0", "loss.r1_interval_steps=1")  # fmt: skip
    run = train(cfg, run_dir=str(tmp_path / "run"))
    with open(os.path.join(run, "stats.jsonl")) as fh:
        record = json.loads(fh.readline())
    assert record["step"] == 2 and abs(record["loss_d"]) < 1e6 and "loss_r1" in record
    assert os.listdir(tmp_path / "cache" / "a")  # the resampled scan was cached on disk (MONAI PersistentDataset)


@pytest.mark.parametrize("kind", ["export", "torchscript"])
def test_pix2pix_with_a_user_supplied_perceptual_network(kind, tiny_config, tmp_path):
    features = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
    if kind == "export":  # torch.export, with a free batch size
        path = tmp_path / "features.pt2"
        batch = torch.export.Dim("batch", min=2)
        program = torch.export.export(features, (torch.zeros(4, 1, 16, 16),), dynamic_shapes={"input": {0: batch}})
        torch.export.save(program, str(path))
    else:
        path = tmp_path / "features.pt"
        with pytest.warns(DeprecationWarning):
            torch.jit.script(features).save(str(path))
    cfg = tiny_config("pix2pix", *QUIET, "train.steps=2", "loss.perceptual_weight=1.0",
                      f"loss.perceptual_network={path}", "loss.gan=hinge")  # fmt: skip
    run = train(cfg, run_dir=str(tmp_path / "run"))
    with open(os.path.join(run, "stats.jsonl")) as fh:
        record = json.loads(fh.readline())
    assert record["loss_perceptual"] > 0
