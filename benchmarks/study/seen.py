"""The study against images seen (`run --images N ...`), not wall clock: every medgan seed and every stock
seed trains to the largest count and keeps a checkpoint at each, all side by side; then
`seen_score` scores every checkpoint against the training subjects' slices, beside the held-out
subjects' slices at the same sample sizes (the floor).

The data folder is split by subject (`--holdout`): the models train on the other subjects only, so the
floor is what a new real subject scores, not slices adjacent to the ones trained on. medgan reaches each
count in `ceil(count / batch)` steps: `medgan train` runs to the first count and `medgan train --resume`
(which restores the run exactly) goes on to each next one, so its checkpoints sit at those steps. The stock
peer keeps its generator at the first step that reaches each count (`stock --images`).

Between counts each medgan run also saves a checkpoint every `SAVE_EVERY_IMAGES` images, so a study that is
stopped (a session ending, a machine going back) loses at most that much: `run --resume` goes on from the
newest checkpoint. Once a run has every count, the save points between them are deleted.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any

import torch

from benchmarks.study.common import REPO, SCRIPT, log, resolve_device
from benchmarks.study.runs import stamp_ended, study_overrides, summarise_run, tail, wait_all
from benchmarks.study.stock import STOCK, stock_checkpoint_path
from medgan.tasks.checkpoint import checkpoint_paths, checkpoint_step, latest_checkpoint

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
SAVE_EVERY_IMAGES = 5000  # a save point between counts: a few minutes of a CPU run, seconds of a GPU one


def plan_steps(counts: list[int], batch_size: int) -> list[dict[str, int]]:
    """For each count (sorted, repeats dropped): the steps that reach it at `batch_size` images a step and the
    images those steps see (the count rounded up to a whole batch)."""
    if not counts or min(counts) < 1:
        raise SystemExit(f"--images: counts must be positive, not {counts}")
    plan = []
    for count in sorted(set(counts)):
        steps = math.ceil(count / batch_size)
        plan.append({"images": count, "steps": steps, "images_seen": steps * batch_size})
    return plan


def subject_of(path: str) -> str | None:
    """The subject a data folder's image file holds (its name without the image suffix), None for other files."""
    name = os.path.basename(path)
    return next((name[: -len(s)] for s in IMAGE_SUFFIXES if name.endswith(s)), None)


def split_by_subject(data: str, holdout: list[str], out: str, keep: bool = False) -> dict[str, Any]:
    """Copy the subjects of `data` into OUT/data_train and OUT/data_heldout (each image with its sidecar);
    `holdout` names the held-out ones. Returns both folders and their subjects. `keep`: folders an earlier
    run left with the same subjects are kept as they are (runs that go on may still be reading them)."""
    files = {subject_of(p): p for p in sorted(glob.glob(os.path.join(data, "*"))) if subject_of(p)}
    unknown = sorted(set(holdout) - set(files))
    if unknown:
        raise SystemExit(f"--holdout {' '.join(unknown)}: no such subject in {data} (it has {', '.join(files)})")
    if not holdout or len(set(holdout)) == len(files):
        raise SystemExit(f"--holdout must name at least one and not all of the subjects of {data}: {', '.join(files)}")
    split: dict[str, Any] = {}
    for part, chosen in (("train", lambda s: s not in holdout), ("heldout", lambda s: s in holdout)):
        folder = os.path.join(out, f"data_{part}")
        subjects = [s for s in files if chosen(s)]
        split[part] = {"folder": folder, "subjects": subjects}
        if keep and os.path.isdir(folder):
            found = sorted(filter(None, map(subject_of, os.listdir(folder))))
            if found != sorted(subjects):
                raise SystemExit(f"--resume: {folder} holds {', '.join(found)}, not this split's "
                                 f"{', '.join(subjects)}; choose the --holdout of that run")  # fmt: skip
            continue
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        for subject in subjects:
            shutil.copy2(files[subject], folder)
            sidecar = os.path.join(data, f"{subject}.json")
            if os.path.exists(sidecar):
                shutil.copy2(sidecar, folder)
    return split


def medgan_command(args: argparse.Namespace, seed: int, run_dir: str, plan: list[dict], sets: list[str],
                   done: int = 0, started: bool = False) -> list[str]:  # fmt: skip
    """One shell line: `medgan train` to the first count, then `--resume` to each next count; the first `done`
    counts are already there, and `started`: the run has a save point before the next count (it goes on from
    its newest checkpoint either way)."""
    lines = []
    for i, point in enumerate(plan):
        if i < done:
            continue
        command = [sys.executable, "-m", "medgan", "train", "-c", args.config, "--run-dir", run_dir]
        command += ["--resume"] if i or started else []
        for item in [*sets, *args.set, f"seed={seed}", f"train.steps={point['steps']}"]:
            command += ["--set", item]
        lines.append(shlex.join(command))
    return ["bash", "-c", "set -e; " + " && ".join(lines)]


def stock_command(args: argparse.Namespace, seed: int, run_dir: str, data: str, plan: list[dict]) -> list[str]:
    command = [sys.executable, str(SCRIPT), "stock", "--data", data, "--config", args.config, "--out", run_dir,
               "--seed", str(seed), "--device", resolve_device(args.device).type,
               "--images", *(str(p["images"]) for p in plan)]  # fmt: skip
    for item in args.set:
        command += ["--set", item]
    return command


def _checkpoints(kind: str, run_dir: str, plan: list[dict]) -> dict[str, dict[str, Any]]:
    """The checkpoint of each count that the run left (None where it is missing)."""
    found = {}
    for point in plan:
        if kind == "medgan":
            path = os.path.join(run_dir, "checkpoints", f"step_{point['steps']:07d}.pt")
            seen = point["images_seen"]
        else:
            path = stock_checkpoint_path(run_dir, point["images"])
            seen = None
            if os.path.exists(path):  # the first step at or past the count: a whole batch of the real set more
                seen = int(torch.load(path, map_location="cpu", weights_only=True).get("images_seen", -1))
        found[str(point["images"])] = {"path": path if os.path.exists(path) else None, "images_seen": seen}
    return found


COUNTS_FILE = "study_counts.json"  # in a medgan run folder: the steps of every count any study run asked of it


def count_steps(run_dir: str, plan: list[dict]) -> set[int]:
    """The steps of the counts this run keeps: this plan's and every earlier study run's (from COUNTS_FILE), so a
    later study with other counts never takes an earlier one's count checkpoint for a save point. A folder from
    before the file existed keeps every checkpoint it has."""
    path = os.path.join(run_dir, COUNTS_FILE)
    if os.path.exists(path):
        with open(path) as fh:
            steps = set(json.load(fh))
    else:
        steps = {checkpoint_step(p) for p in checkpoint_paths(run_dir)}
    return steps | {point["steps"] for point in plan}


def record_counts(run_dir: str, counts: set[int]) -> None:
    """Write COUNTS_FILE before training, so a run stopped part-way knows which of its checkpoints are counts."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, COUNTS_FILE)
    with open(path + ".tmp", "w") as fh:
        json.dump(sorted(counts), fh)
    os.replace(path + ".tmp", path)


def save_points(run_dir: str, counts: set[int]) -> list[str]:
    """The run's checkpoints at none of its counts' steps: the save points between them."""
    return [path for path in checkpoint_paths(run_dir) if checkpoint_step(path) not in counts]


def stale_save_points(run_dir: str, counts: set[int]) -> list[str]:
    """The save points no study goes on from: all but those past the run's newest count checkpoint and short of a
    count some study asked of it (that study, perhaps still training the run, goes on from the newest of them)."""
    steps = {path: checkpoint_step(path) for path in checkpoint_paths(run_dir)}
    newest = max((step for step in steps.values() if step in counts), default=0)
    return [path for path, step in steps.items() if step not in counts and not newest < step < max(counts)]


def train_all(args: argparse.Namespace, out: str, data: str, plan: list[dict]) -> dict[str, dict[str, dict]]:
    """Every medgan and stock seed, all at once, each to the largest count. Returns {kind: {seed: run}}."""
    sets = [item for item in study_overrides(data, None, args.log_every, 10**7) if not item.startswith("train.steps")]
    batch = plan[0]["images_seen"] // plan[0]["steps"]
    every = max(1, SAVE_EVERY_IMAGES // batch)
    sets += ["train.keep_checkpoints=100000", f"train.checkpoint_every_steps={every}"]  # save points pruned below
    if args.device != "auto":
        sets.append(f"train.device={args.device}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    pending: list[tuple[tuple[str, int], dict[str, Any]]] = []
    reused: dict[tuple[str, int], str] = {}
    for kind, seed in [*(("medgan", s) for s in args.seeds), *(("stock", s) for s in args.stock_seeds)]:
        name = f"seed{seed}" if kind == "medgan" else f"stock{seed}"
        run_dir, log_path = os.path.join(out, name), os.path.join(out, f"{name}.log")
        done, started = 0, False
        counts = count_steps(run_dir, plan) if kind == "medgan" else set()
        if os.path.exists(run_dir):
            if getattr(args, "resume", False):
                found = _checkpoints(kind, run_dir, plan)
                done = next((i for i, point in enumerate(plan) if not found[str(point["images"])]["path"]), len(plan))
                started = kind == "medgan" and bool(save_points(run_dir, counts))
            elif not args.overwrite:
                raise SystemExit(f"{run_dir} exists; pass --overwrite, --resume or choose another --out")
            if done == len(plan):  # every count is there: score it as it is
                reused[(kind, seed)] = run_dir
                for path in stale_save_points(run_dir, counts) if kind == "medgan" else []:  # stopped before pruning
                    os.remove(path)
                continue
            if kind == "stock" or (done == 0 and not started):  # the stock peer cannot go on: it starts again
                done, started = 0, False
                shutil.rmtree(run_dir)
                counts = {point["steps"] for point in plan} if kind == "medgan" else set()
        if kind == "medgan":
            record_counts(run_dir, counts)
            command = medgan_command(args, seed, run_dir, plan, sets, done, started)
        else:
            command = stock_command(args, seed, run_dir, data, plan)
        if done or started:  # a medgan run with a checkpoint (a count's own is named by its count)
            newest = latest_checkpoint(run_dir)
            steps = checkpoint_step(newest)
            seen = next((point["images"] for point in plan if point["steps"] == steps), steps * batch)
            log(f"{name}: going on from its newest checkpoint, {os.path.basename(newest)} ({seen} images)")
            log_path = os.path.join(out, f"{name}_from{seen}.log")
        pending.append(((kind, seed), {"run_dir": run_dir, "log_path": log_path, "command": command,
                                       "counts": counts}))  # fmt: skip
    jobs = max(1, min(len(pending), getattr(args, "jobs", None) or len(pending)))  # runs that train, at once
    if "OMP_NUM_THREADS" not in env:  # share the cores instead of every process taking all of them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    kill_after = args.kill_after if args.kill_after is not None else 6 * 3600.0
    log(f"training {len(pending)} run(s) to {plan[-1]['images']} images ({len(args.seeds)} medgan, "
        f"{len(args.stock_seeds)} stock), {jobs} at a time with {env['OMP_NUM_THREADS']} "
        f"thread(s) each; kill timer {kill_after:.0f} s")  # fmt: skip
    procs, killed = run_queue(pending, jobs, kill_after, env)
    runs: dict[str, dict[str, dict]] = {"medgan": {}, "stock": {}}
    for (kind, seed), run_dir in reused.items():
        runs[kind][str(seed)] = {"status": "ok", "reused": True, "run_dir": run_dir,
                                 "checkpoints": _checkpoints(kind, run_dir, plan)}  # fmt: skip
        if kind == "medgan":
            runs[kind][str(seed)]["training"] = summarise_run(run_dir)
        log(f"{kind} seed {seed}: every count already there, scored as it is")
    for (kind, seed), p in procs.items():
        code = p["proc"].wait() if "proc" in p else None  # None: the kill timer ran out before it started
        if "log" in p:
            p["log"].close()
        checkpoints = _checkpoints(kind, p["run_dir"], plan)
        complete = all(c["path"] for c in checkpoints.values())
        if kind == "medgan" and complete:  # every count is there: the save points between them are not needed
            for path in stale_save_points(p["run_dir"], p["counts"]):
                os.remove(path)
        run = {
            "status": "ok" if code == 0 and complete else ("killed" if (kind, seed) in killed else "failed"),
            "returncode": code,
            "wall_s": round(p.get("wall_s", time.monotonic() - p["began"]), 2) if "began" in p else 0.0,
            "run_dir": p["run_dir"],
            "log": p["log_path"],
            "command": " ".join(p["command"]),
            "checkpoints": checkpoints,
        }
        if kind == "medgan":
            run["training"] = summarise_run(p["run_dir"])
        if run["status"] != "ok":
            run["log_tail"] = tail(p["log_path"])
        runs[kind][str(seed)] = run
        log(f"{kind} seed {seed}: {run['status']} (exit {code}) after {run['wall_s']:.0f} s")
    return runs


def run_queue(pending: list[tuple[tuple[str, int], dict[str, Any]]], jobs: int, kill_after: float,
              env: dict[str, str]) -> tuple[dict[tuple[str, int], dict[str, Any]], set[tuple[str, int]]]:  # fmt: skip
    """Start the pending runs `jobs` at a time, in order, each as soon as one before it ends, and wait for all.
    At `kill_after` seconds from the start the running ones are stopped (`wait_all`) and the rest never start.
    Returns every run (a started one with its process) and the killed ones."""
    start = time.monotonic()
    queue = list(pending)
    procs: dict[tuple[str, int], dict[str, Any]] = {}
    killed: set[tuple[str, int]] = set()
    while queue or any(p["proc"].poll() is None for p in procs.values() if "proc" in p):
        stamp_ended(procs)
        running = {key: p for key, p in procs.items() if "proc" in p and p["proc"].poll() is None}
        left = kill_after - (time.monotonic() - start)
        if left <= 0 or len(running) >= jobs or not queue:
            if running:  # wait for one to end (or the timer to run out)
                killed |= wait_all(running, max(0.0, left), until_first=bool(queue) and left > 0)
            if time.monotonic() - start >= kill_after:
                for key, p in queue:
                    procs[key] = p
                    killed.add(key)
                queue = []
            continue
        key, p = queue.pop(0)
        p["log"] = open(p["log_path"], "w")  # noqa: SIM115 - closed when the process ends
        p["proc"] = subprocess.Popen(p["command"], cwd=REPO, env=env, stdout=p["log"], stderr=subprocess.STDOUT,
                                     start_new_session=True)  # fmt: skip
        p["began"] = time.monotonic()
        procs[key] = p
    stamp_ended(procs)
    return procs, killed


def describe(plan: list[dict], split: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """What the JSON says about the counts and the split."""
    return {
        "counts": plan,
        "medgan_batch_size": batch_size,
        "stock_batch": f"min({STOCK['batch_size']}, training slices): every stock step sees the whole training set",
        "split": split,
        "split_note": "by subject: the models train on the training subjects only; the floor is the held-out "
        "subjects' slices against the training slices, at the same sample sizes as each generated set",
    }


def run_seen(args: argparse.Namespace, report: dict[str, Any], out: str, write) -> int:
    """The whole images-seen study into `report` (saved by `write` after every stage); 0 when anything scored."""
    from benchmarks.study.common import study_config
    from benchmarks.study.seen_figure import write_curves
    from benchmarks.study.seen_score import build_reference, lead_tag, print_seen_table, score_all, summary_rows
    from medgan.tasks.networks import check_networks

    if not args.seeds and not args.stock_seeds:
        raise SystemExit("nothing to train: give --seeds, --stock-seeds or both")
    if getattr(args, "jobs", None) is not None and args.jobs < 1:
        raise SystemExit(f"--jobs must be at least 1, not {args.jobs}")
    split = split_by_subject(os.path.abspath(args.data), args.holdout, out, keep=getattr(args, "resume", False))
    cfg = study_config(args.config, split["train"]["folder"], list(args.set), seed=(args.seeds or [0])[0])
    check_networks(cfg)  # a typo or an impossible size fails here, not in every run
    if cfg.task != "unconditional":
        raise SystemExit(f"the study draws samples from noise: task must be unconditional, not {cfg.task}")
    plan = plan_steps(args.images, cfg.train.batch_size)
    report["images_seen"] = describe(plan, split, cfg.train.batch_size)
    reference: dict[str, Any] = {}
    report["reference"] = reference
    ref = build_reference(args, split, reference)  # first: a data or extractor problem fails before training
    reference["floor"] = ref.floor
    reference["slice_floor"] = {"fd": ref.slice_floor, "note": "as many random training slices as held-out ones "
                                "against the other training slices: adjacent slices fall on both sides"}  # fmt: skip
    reference["correlation"] = ref.correlation
    reference["samples_per_set"] = ref.n_samples
    write()
    began = time.monotonic()
    report["runs"] = train_all(args, out, split["train"]["folder"], plan)
    report["timing"]["train_wall_s"] = round(time.monotonic() - began, 2)
    write()
    began = time.monotonic()
    first: dict[str, torch.Tensor] = {}
    report["scores"] = score_all(args, report["runs"], ref, write, first)
    report["timing"]["eval_s"] = round(time.monotonic() - began, 2)
    report["summary"] = summary_rows(report)
    if args.figure:
        tag = lead_tag(ref.extractors)
        write_curves(args.figure, report, tag)
        report["figure"] = {"path": os.path.abspath(args.figure), "extractor": tag}
    if getattr(args, "samples_figure", None) and first:
        from benchmarks.study.report import write_figure

        rows = {**ref.examples, **first}
        write_figure(args.samples_figure, list(rows.values()))
        report["samples_figure"] = {"path": os.path.abspath(args.samples_figure), "rows": list(rows),
                                    "count": plan[-1]["images"]}  # fmt: skip
    write()
    print_seen_table(report)
    return 0 if any("error" not in row for row in report["summary"]) else 1
