"""DistributedDataParallel: with two gloo processes every task trains and the ranks' weights stay identical."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from medgan.tasks.checkpoint import checkpoint_paths, load_checkpoint
from medgan.training.objectives import OBJECTIVES

HERE = Path(__file__).resolve().parent


def test_every_task_trains_with_two_processes_and_their_weights_stay_identical(phantom_pairs, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(HERE / "_ddp_tasks.py"), str(tmp_path), phantom_pairs, str(HERE.parents[1])]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=420)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "weights differ" not in result.stderr
    for task in (*OBJECTIVES.names(), "3d"):
        state = load_checkpoint(checkpoint_paths(str(tmp_path / task))[-1])
        ranks = state["ranks"]
        assert state["step"] == 3 and state["world_size"] == 2
        assert ranks[0]["weights"] == ranks[1]["weights"], task  # gradients were averaged: one model, two copies
        noise = [r["objective"]["noise"] for r in ranks]
        assert (noise[0] != noise[1]).any(), task  # while each process drew its own noise
    assert "loss_r1" in (tmp_path / "pix2pix" / "stats.jsonl").read_text()  # R1 went through DDP too
    stats = (tmp_path / "unconditional" / "stats.jsonl").read_text()
    assert "loss_recon" in stats and "loss_r1" in stats  # the reconstruction head trained, beside R1
