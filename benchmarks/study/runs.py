"""The training runs: one `medgan train` per seed and one stock peer per stock seed, all at once, each
stopped by its time limit (or SIGTERM at --kill-after); what each left behind, summarised."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from benchmarks.study.common import REPO, SCRIPT, log, resolve_device


def study_overrides(data: str, minutes: float | None, log_every: int, checkpoint_every: int) -> list[str]:
    """What the study sets on top of the config (the user's --set come after, and win)."""
    sets = [
        f"data.source={data}",
        "data.window=null",  # the volumes are 0..1000 per subject: the trainer's percentile window
        "data.num_workers=2",
        "train.steps=1000000",  # the time limit ends the run
        "train.tensorboard=false",
        f"train.log_every_steps={log_every}",
        "train.sample_every_steps=1000000",  # one grid, at the end
        f"train.checkpoint_every_steps={checkpoint_every}",  # a fallback if a run has to be killed
        "train.keep_checkpoints=1",
        "train.compile=false",  # compiling costs a large share of a few minutes; --set train.compile=true to test it
    ]
    if minutes is not None:
        sets.append(f"train.time_limit_minutes={minutes}")
    return sets


def read_stats(run_dir: str) -> list[dict]:
    """The rows of a run's stats.jsonl that parse (a killed run may leave half a line)."""
    path = os.path.join(run_dir, "stats.jsonl")
    rows = []
    with contextlib.suppress(OSError), open(path) as fh:
        for line in fh:
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return rows


def summarise_run(run_dir: str) -> dict[str, Any]:
    rows = read_stats(run_dir)
    if not rows:
        return {"log_lines": 0}
    last = rows[-1]
    losses = {k: v for k, v in last.items() if k.startswith("loss") or k in ("real_sign", "r1")}
    memory = [r["gpu_memory_gib"] for r in rows if isinstance(r.get("gpu_memory_gib"), (int, float))]
    keep = ("step", "images_seen", "augment_p", "real_sign", "samples_per_s", "time_s")
    return {
        "log_lines": len(rows),
        "steps": last.get("step"),
        "images_seen": last.get("images_seen"),
        "augment_p": last.get("augment_p"),
        "samples_per_s_last": last.get("samples_per_s"),
        "train_time_s": last.get("time_s"),
        "losses_last": losses,
        "gpu_memory_gib_max": max(memory) if memory else None,
        "sessions": read_sessions(run_dir),  # what each start or resume trained on, and in which precision
        "trajectory": [
            {k: r[k] for k in r if k in keep or k.startswith("loss")} for r in rows[:: max(1, len(rows) // 40)]
        ],
    }


def read_sessions(run_dir: str) -> list[dict[str, Any]]:
    """The run folder's sessions.jsonl: a record per start or resume (step, device, hardware, precision...)."""
    sessions = []
    with contextlib.suppress(OSError), open(os.path.join(run_dir, "sessions.jsonl")) as fh:
        for line in fh:
            with contextlib.suppress(json.JSONDecodeError):
                sessions.append(json.loads(line))
    return sessions


def tail(path: str, chars: int = 3000) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as fh:
        return fh.read()[-chars:]
    return ""


def _command(args: argparse.Namespace, kind: str, seed: int, run_dir: str, sets: list[str]) -> list[str]:
    if kind == "medgan":
        command = [sys.executable, "-m", "medgan", "train", "-c", args.config, "--run-dir", run_dir,
                   "--set", f"seed={seed}"]  # fmt: skip
    else:
        minutes = args.minutes if args.minutes > 0 else args.kill_after / 60
        command = [sys.executable, str(SCRIPT), "stock", "--data", os.path.abspath(args.data),
                   "--config", args.config, "--out", run_dir, "--seed", str(seed), "--minutes", str(minutes),
                   "--device", resolve_device(args.device).type]  # fmt: skip
    for item in [*sets, *args.set]:
        command += ["--set", item]
    return command


def wait_all(procs: dict[tuple[str, int], dict[str, Any]], kill_after: float,
             until_first: bool = False) -> set[tuple[str, int]]:  # fmt: skip
    """Wait for every process (`until_first`: only until one ends); at `kill_after` seconds SIGTERM the rest
    (SIGKILL 15 s later). Returns the killed."""
    start = time.monotonic()
    killed: set[tuple[str, int]] = set()

    def waiting() -> bool:
        ended = [p["proc"].poll() is not None for p in procs.values()]
        return not any(ended) if until_first else not all(ended)

    while waiting():
        if time.monotonic() - start > kill_after:
            for key, p in procs.items():
                if p["proc"].poll() is None:
                    killed.add(key)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p["proc"].pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(p["proc"].poll() is None for p in procs.values()):
                time.sleep(0.5)
            for p in procs.values():
                if p["proc"].poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p["proc"].pid, signal.SIGKILL)
            break
        stamp_ended(procs)
        time.sleep(0.5)
    stamp_ended(procs)
    return killed


def stamp_ended(procs: dict[tuple[str, int], dict[str, Any]]) -> None:
    """Give every started process that has ended and has no `wall_s` yet its wall time since `began`."""
    for p in procs.values():
        if "proc" in p and "wall_s" not in p and p["proc"].poll() is not None:
            p["wall_s"] = time.monotonic() - p["began"]


def _outcome(kind: str, p: dict[str, Any], killed: bool) -> dict[str, Any]:
    """What one finished process left: its status, checkpoint (or stock generator) and training summary."""
    from medgan.tasks.checkpoint import latest_checkpoint

    code = p["proc"].wait()
    p["log"].close()
    wall = p.get("wall_s", time.monotonic() - p["began"])
    if kind == "medgan":
        checkpoint = latest_checkpoint(p["run_dir"])
        summary = summarise_run(p["run_dir"])
    else:
        path = os.path.join(p["run_dir"], "generator.pt")
        checkpoint = path if os.path.exists(path) else None
        summary = {}
        with contextlib.suppress(OSError, ValueError), open(os.path.join(p["run_dir"], "summary.json")) as fh:
            summary = json.load(fh)
    ok = code == 0 and checkpoint is not None
    result = {
        "status": "ok" if ok else ("killed" if killed else "failed"),
        "returncode": code,
        "wall_s": round(wall, 2),
        "checkpoint": checkpoint,
        "run_dir": p["run_dir"],
        "log": p["log_path"],
        "command": " ".join(p["command"]),
        **summary,
    }
    if not ok:
        result["log_tail"] = tail(p["log_path"])
    return result


def train_seeds(args: argparse.Namespace, out: str, sets: list[str]) -> tuple[dict[str, dict], dict[str, dict]]:
    """One `medgan train` per seed and one stock DCGAN per --stock-seeds, all at once; each stopped by its time
    limit (or SIGTERM at --kill-after). Returns (medgan runs, stock runs), keyed by seed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    jobs = len(args.seeds) + len(args.stock_seeds)
    if "OMP_NUM_THREADS" not in env:  # share the cores instead of every process taking all of them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, jobs)))
    procs: dict[tuple[str, int], dict[str, Any]] = {}
    for kind, seed in [*(("medgan", s) for s in args.seeds), *(("stock", s) for s in args.stock_seeds)]:
        name = f"seed{seed}" if kind == "medgan" else f"stock{seed}"
        run_dir, log_path = os.path.join(out, name), os.path.join(out, f"{name}.log")
        command = _command(args, kind, seed, run_dir, sets)
        fh = open(log_path, "w")  # noqa: SIM115 - closed when the process ends
        began = time.monotonic()
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        procs[(kind, seed)] = {"proc": proc, "log": fh, "began": began, "run_dir": run_dir, "log_path": log_path,
                               "command": command}  # fmt: skip
    log(f"training {len(procs)} run(s) concurrently ({len(args.seeds)} medgan, {len(args.stock_seeds)} stock); "
        f"kill timer {args.kill_after:.0f} s")  # fmt: skip
    killed = wait_all(procs, args.kill_after)
    results: dict[str, dict[str, dict]] = {"medgan": {}, "stock": {}}
    for (kind, seed), p in procs.items():
        result = _outcome(kind, p, (kind, seed) in killed)
        results[kind][str(seed)] = result
        log(f"{kind} seed {seed}: {result['status']} (exit {result['returncode']}) after {result['wall_s']:.0f} s, "
            f"step {result.get('steps')}")  # fmt: skip
    return results["medgan"], results["stock"]
