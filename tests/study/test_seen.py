"""The images-seen mode of the small-data study (benchmarks/study/seen*.py): its step plan, its split by
subject, its training command chain and its collapse statistic, checked without training anything."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.study import seen
from benchmarks.study.seen import medgan_command, plan_steps, split_by_subject
from benchmarks.study.seen_score import correlation_flag, mean_pairwise_correlation


def test_plan_rounds_each_count_up_to_whole_batches():
    plan = plan_steps([50_000, 10_000, 25_000, 10_000], batch_size=16)
    assert [p["images"] for p in plan] == [10_000, 25_000, 50_000]
    assert [p["steps"] for p in plan] == [625, 1563, 3125]
    assert [p["images_seen"] for p in plan] == [10_000, 25_008, 50_000]
    with pytest.raises(SystemExit, match="positive"):
        plan_steps([0, 10], 16)


def test_split_by_subject_keeps_sidecars_and_refuses_unknown_subjects(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for subject in ("a", "b", "c"):
        (data / f"{subject}.nii.gz").write_bytes(subject.encode())
        (data / f"{subject}.json").write_text('{"Modality": "MR"}')
    (data / "manifest.json").write_text("{}")  # not a subject
    split = split_by_subject(str(data), ["b"], str(tmp_path / "out"))
    assert split["train"]["subjects"] == ["a", "c"] and split["heldout"]["subjects"] == ["b"]
    assert sorted(p.name for p in Path(split["train"]["folder"]).iterdir()) == ["a.json", "a.nii.gz", "c.json",
                                                                                 "c.nii.gz"]  # fmt: skip
    assert sorted(p.name for p in Path(split["heldout"]["folder"]).iterdir()) == ["b.json", "b.nii.gz"]
    assert (data / "b.nii.gz").read_bytes() == b"b"  # the input folder is left as it was
    with pytest.raises(SystemExit, match="no such subject"):
        split_by_subject(str(data), ["z"], str(tmp_path / "out"))
    with pytest.raises(SystemExit, match="not all"):
        split_by_subject(str(data), ["a", "b", "c"], str(tmp_path / "out"))


def test_medgan_chain_resumes_to_each_count_and_its_step_count_wins():
    args = argparse.Namespace(config="configs/synth2d_64.yaml", set=["train.steps=7"])
    plan = plan_steps([10_000, 25_000], batch_size=16)
    line = medgan_command(args, 3, "/tmp/run", plan, ["data.source=/d"])[2]
    first, second = line.removeprefix("set -e; ").split(" && ")
    assert "--resume" not in first and "--resume" in second
    assert first.endswith("--set train.steps=625") and second.endswith("--set train.steps=1563")
    assert "--set seed=3" in first and "--set seed=3" in second


def test_a_resumed_chain_starts_from_the_first_count_it_lacks():
    args = argparse.Namespace(config="configs/synth2d_64.yaml", set=[])
    plan = plan_steps([10_000, 25_000, 50_000, 100_000], batch_size=16)
    lines = medgan_command(args, 0, "/tmp/run", plan, [], done=3)[2].removeprefix("set -e; ").split(" && ")
    assert len(lines) == 1 and "--resume" in lines[0] and lines[0].endswith("--set train.steps=6250")


def test_resume_keeps_the_split_an_earlier_run_left_and_refuses_another(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for subject in ("a", "b", "c"):
        (data / f"{subject}.nii.gz").write_bytes(subject.encode())
    split_by_subject(str(data), ["b"], str(tmp_path / "out"))
    kept = tmp_path / "out" / "data_train" / "a.nii.gz"
    kept.write_bytes(b"in use")  # a run that goes on may be reading it: left as it is
    split = split_by_subject(str(data), ["b"], str(tmp_path / "out"), keep=True)
    assert kept.read_bytes() == b"in use" and split["train"]["subjects"] == ["a", "c"]
    with pytest.raises(SystemExit, match="holds a, c, not this split's b, c"):
        split_by_subject(str(data), ["a"], str(tmp_path / "out"), keep=True)
    assert split_by_subject(str(data), ["b"], str(tmp_path / "out"))  # without --resume: copied afresh
    assert kept.read_bytes() == b"a"


def _train_instantly(monkeypatch, tmp_path, plan, seeds, on_start=lambda command: None, threads=None):
    """`seen.train_all` with --resume where each run ends at once (after `on_start(command)`, which may write the
    checkpoints it would have left). Returns the runs, the commands started and the arguments."""
    started = []

    class Finished:  # what Popen gives back
        def __init__(self, command, **kwargs):
            started.append(command)
            if threads is not None:  # OMP_NUM_THREADS each run was started with, on a 4-core machine
                threads.append(kwargs["env"]["OMP_NUM_THREADS"])
            on_start(command)
            self.pid, self.returncode = 0, 0

        def poll(self):
            return 0

        def wait(self):
            return 0

    monkeypatch.setattr(seen.subprocess, "Popen", Finished)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(seen.os, "cpu_count", lambda: 4)
    args = argparse.Namespace(config="configs/synth2d_64.yaml", set=[], seeds=seeds, stock_seeds=[], resume=True,
                              overwrite=False, device="cpu", log_every=25, kill_after=None)  # fmt: skip
    return seen.train_all(args, str(tmp_path), str(tmp_path / "data"), plan), started, args


def test_resume_scores_a_complete_run_as_it_is_and_trains_an_incomplete_one_on(tmp_path, monkeypatch):
    plan = plan_steps([10_000, 25_000], batch_size=16)
    for seed, steps in ((0, (625, 1563, 1875)), (1, (625,))):  # seed 0 stopped after its last count, unpruned
        (tmp_path / f"seed{seed}" / "checkpoints").mkdir(parents=True)
        (tmp_path / f"seed{seed}" / seen.COUNTS_FILE).write_text("[625, 1563]")
        for step in steps:
            (tmp_path / f"seed{seed}" / "checkpoints" / f"step_{step:07d}.pt").write_bytes(b"")
    last = tmp_path / "seed1" / "checkpoints" / "step_0001563.pt"
    threads: list[str] = []
    runs, started, args = _train_instantly(monkeypatch, tmp_path, plan, [0, 1], lambda _: last.write_bytes(b""),
                                           threads)  # fmt: skip
    assert runs["medgan"]["0"]["reused"] and runs["medgan"]["0"]["status"] == "ok"
    assert not (tmp_path / "seed0" / "checkpoints" / "step_0001875.pt").exists()  # the save point is pruned
    assert len(started) == 1 and "seed1" in started[0][2]  # only the run that lacked a count trained
    assert threads == ["4"]  # and it had every core: the scored run takes none
    chain = started[0][2].removeprefix("set -e; ").split(" && ")
    assert len(chain) == 1 and "--resume" in chain[0] and chain[0].endswith("train.steps=1563")
    assert runs["medgan"]["1"]["status"] == "ok" and (tmp_path / "seed1_from10000.log").exists()
    args.resume = False
    with pytest.raises(SystemExit, match="--resume"):
        seen.train_all(args, str(tmp_path), str(tmp_path / "data"), plan)


def test_the_queue_trains_at_most_jobs_runs_at_once_in_order_and_drops_the_rest_at_the_timer(tmp_path, monkeypatch):
    from benchmarks.study import runs

    live: list[str] = []
    began: list[str] = []
    peak = [0]
    made = []

    class Running:  # a run that ends after `polls` polls (never: None)
        def __init__(self, command, **kwargs):
            self.name, self.polls, self.pid, self.returncode = command[0], command[1], 1, None
            began.append(self.name)
            made.append(self)
            live.append(self.name)
            peak[0] = max(peak[0], len(live))

        def poll(self):
            if self.returncode is None and self.polls is not None:
                self.polls -= 1
                if self.polls <= 0:
                    self.returncode = 0
                    live.remove(self.name)
            return self.returncode

        def wait(self):
            return self.returncode

    monkeypatch.setattr(seen.subprocess, "Popen", Running)
    monkeypatch.setattr(runs.time, "sleep", lambda s: None)
    stopped = []

    def killpg(pid, sig):  # SIGTERM ends the run that would never end
        stopped.append(sig)
        for run in made:
            if run.returncode is None:
                run.returncode = -sig

    monkeypatch.setattr(runs.os, "killpg", killpg)

    def queue(polls):
        return [((f"r{i}", i), {"run_dir": str(tmp_path), "log_path": str(tmp_path / f"r{i}.log"),
                                "command": [f"r{i}", n]}) for i, n in enumerate(polls)]  # fmt: skip

    procs, killed = seen.run_queue(queue([3, 9, 2, 4, 1]), 2, 3600.0, {})
    assert began == ["r0", "r1", "r2", "r3", "r4"] and peak[0] == 2 and not killed and not live
    assert all(p["proc"].returncode == 0 and p["wall_s"] >= 0 for p in procs.values())
    began.clear()
    peak[0] = 0
    procs, killed = seen.run_queue(queue([5, 5, 5]), 1, 3600.0, {})
    assert began == ["r0", "r1", "r2"] and peak[0] == 1  # one at a time: each after the one before it ended

    began.clear()
    live.clear()
    procs, killed = seen.run_queue(queue([None, 1]), 1, 0.01, {})  # the first never ends: the timer stops it
    assert began == ["r0"] and killed == {("r0", 0), ("r1", 1)} and stopped and procs[("r0", 0)]["proc"].returncode < 0
    assert "proc" not in procs[("r1", 1)]  # never started


def test_mean_pairwise_correlation_matches_numpy():
    rng = np.random.default_rng(0)
    images = rng.random((6, 8, 8))
    images[1] = images[0] * 2 + 1  # a perfectly correlated pair
    r = np.corrcoef(images.reshape(6, -1))
    expected = r[~np.eye(6, dtype=bool)].mean()
    assert mean_pairwise_correlation(torch.from_numpy(images)) == pytest.approx(expected, abs=1e-6)
    same = torch.from_numpy(np.repeat(images[:1], 4, axis=0))
    assert mean_pairwise_correlation(same) == pytest.approx(1.0, abs=1e-6)  # a collapsed set


def test_the_correlation_flag_names_the_side_a_set_fails_on():
    def flag(difference):
        return correlation_flag({"difference": difference, "collapse_suspected": abs(difference) > 0.1})

    assert flag(0.05) == flag(-0.09) == ""
    assert flag(0.3).startswith("COLLAPSE?")  # samples more alike than real slices: collapse in the usual sense
    assert flag(-0.2).startswith("OFF RULE") and "COLLAPSE" not in flag(-0.2)  # less alike: speckle, fragments


def _report(floor_fd: float, fds: dict[str, dict[int, list[float]]]) -> dict:
    """A scored images-seen report: fds[kind][count] lists each seed's FD (precision and recall follow from it)."""
    scores: dict = {}
    for kind, per_count in fds.items():
        for count, values in per_count.items():
            for seed, fd in enumerate(values):
                scores.setdefault(kind, {}).setdefault(str(seed), {})[str(count)] = {
                    "images_seen": count,
                    "efficientnet_lite0": {
                        "fd": fd,
                        "fd_over_floor": fd / floor_fd,
                        "precision": 1 / fd,
                        "recall": 2 / fd,
                    },
                }
    return {
        "scores": scores,
        "reference": {"floor": {"efficientnet_lite0": {"fd": floor_fd, "recall": 0.1}}},
        "images_seen": {"counts": [{"images": c} for c in (10_000, 25_000)]},
    }


def test_compare_rows_average_each_count_over_its_seeds_and_the_figure_takes_variants(tmp_path):
    from PIL import Image

    from benchmarks.study.seen_figure import compare_rows, nice_ticks, write_curves

    base = _report(100.0, {"medgan": {10_000: [300.0, 200.0, 250.0], 25_000: [150.0, 120.0, 90.0]},
                           "stock": {10_000: [400.0], 25_000: [350.0]}})  # fmt: skip
    variant = _report(100.0, {"medgan": {10_000: [260.0, 240.0], 25_000: [80.0, 110.0]}})
    rows = compare_rows({"base": (base, "medgan"), "ada": (variant, "medgan"), "stock": (base, "stock")},
                        "efficientnet_lite0")  # fmt: skip
    by = {(r["label"], r["images"]): r for r in rows}
    assert set(by) == {(k, c) for k in ("base", "ada", "stock") for c in (10_000, 25_000)}
    assert by[("base", 25_000)]["fd_over_floor"]["mean"] == pytest.approx(np.mean([1.5, 1.2, 0.9]))
    assert by[("base", 25_000)]["fd_over_floor"]["values"] == pytest.approx([1.5, 1.2, 0.9])
    assert by[("ada", 10_000)]["recall"]["mean"] == pytest.approx(np.mean([2 / 260, 2 / 240]))
    assert by[("stock", 10_000)]["seeds"] == [0]

    out = tmp_path / "curves.png"
    write_curves(str(out), base, "efficientnet_lite0", {"ada": variant})
    pixels = np.asarray(Image.open(out).convert("RGB"))
    green = np.all(pixels == (20, 140, 70), axis=-1).sum()
    blue = np.all(pixels == (31, 94, 180), axis=-1).sum()
    assert green > 50 and blue > 50  # the variant's lines are drawn beside the base's
    write_curves(str(out), base, "efficientnet_lite0", {"ada": variant, "psi": variant})
    pixels = np.asarray(Image.open(out).convert("RGB"))
    assert np.all(pixels == (230, 130, 0), axis=-1).sum() > 50  # a second variant in a colour of its own
    write_curves(str(out), base, "efficientnet_lite0")
    pixels = np.asarray(Image.open(out).convert("RGB"))
    assert np.all(pixels == (20, 140, 70), axis=-1).sum() == 0
    write_curves(str(out), variant, "efficientnet_lite0")  # a study without stock runs: no red line, nor legend
    pixels = np.asarray(Image.open(out).convert("RGB"))
    assert np.all(pixels == (200, 40, 40), axis=-1).sum() == 0 and np.all(pixels == (31, 94, 180), axis=-1).sum() > 50

    with pytest.raises(SystemExit, match="floor"):  # another split or sample size cannot share the axes
        write_curves(str(out), base, "efficientnet_lite0", {"other": _report(90.0, {"medgan": {10_000: [1.0]}})})

    for high in (0.7, 1.0, 107.5, 348.9 * 1.05):
        ticks = nice_ticks(high)
        assert ticks[0] == 0 and ticks[-1] >= high and 3 <= len(ticks) <= 6
        steps = np.diff(ticks)
        assert np.allclose(steps, steps[0])
        mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
        assert any(np.isclose(mantissa, m) for m in (1, 2, 2.5, 5))


def test_scoring_draws_with_the_generators_own_truncation_or_the_one_asked_and_keeps_the_first_samples(
    monkeypatch, drawn_psi
):
    import types

    from benchmarks.study import seen_score

    asked = drawn_psi
    lead = {"fd": 1.0, "fd_over_floor": 1.0, "recall": 0.0}
    monkeypatch.setattr(seen_score, "score_set", lambda fake, ref: {"n_samples": len(fake), "x": lead})
    ref = types.SimpleNamespace(n_samples=10, device=torch.device("cpu"), extractors={"x": None})
    runs = {"medgan": {"0": {"status": "ok", "checkpoints": {"10000": {"path": "a.pt", "images_seen": 10_000},
                                                             "25000": {"path": "b.pt", "images_seen": 25_008}}}},
            "stock": {}}  # fmt: skip
    for truncation, used in ((None, 0.9), (0.5, 0.5)):
        first: dict = {}
        args = argparse.Namespace(gen_batch=4, truncation=truncation)
        scores = seen_score.score_all(args, runs, ref, lambda: None, first)
        assert asked[-1] == truncation and scores["medgan"]["0"]["25000"]["truncation_psi"] == used
        assert list(first) == ["medgan seed 0"] and first["medgan seed 0"].shape == (8, 16, 16)


def test_a_run_summary_carries_what_each_session_trained_on(tmp_path):
    """The precision a run trained in depends on the machine (auto), so the study keeps each session's record."""
    import json

    from benchmarks.study.runs import summarise_run

    (tmp_path / "stats.jsonl").write_text(json.dumps({"step": 5, "images_seen": 80, "loss_d": 1.0}) + "\n")
    sessions = [{"step": 0, "device": "cpu", "precision": "bf16"}, {"step": 3, "device": "cpu", "precision": "fp32"}]
    (tmp_path / "sessions.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sessions) + "{torn")
    summary = summarise_run(str(tmp_path))
    assert summary["steps"] == 5 and summary["sessions"] == sessions
    (tmp_path / "sessions.jsonl").unlink()  # a run from before sessions were recorded
    assert summarise_run(str(tmp_path))["sessions"] == []


def test_a_stopped_study_goes_on_from_its_newest_save_point_and_prunes_them_once_every_count_is_there(
    tmp_path, monkeypatch
):
    plan = plan_steps([10_000, 25_000], batch_size=16)
    ckpts = {seed: tmp_path / f"seed{seed}" / "checkpoints" for seed in (0, 1)}
    for folder in ckpts.values():
        folder.mkdir(parents=True)
        (folder.parent / seen.COUNTS_FILE).write_text("[625, 1563]")
    (ckpts[0] / "step_0000312.pt").write_bytes(b"")  # stopped before its first count, after one save point
    for step in (312, 625, 937, 1249):  # stopped after its first count, with save points on either side of it
        (ckpts[1] / f"step_{step:07d}.pt").write_bytes(b"")

    def counts_written(command):  # the checkpoints of the counts the run lacked
        for step in (625, 1563):
            (ckpts[0 if "seed0" in command[2] else 1] / f"step_{step:07d}.pt").write_bytes(b"")

    runs, started, _ = _train_instantly(monkeypatch, tmp_path, plan, [0, 1], counts_written)
    chain0 = started[0][2].removeprefix("set -e; ").split(" && ")
    chain1 = started[1][2].removeprefix("set -e; ").split(" && ")
    assert len(chain0) == 2 and all("--resume" in line for line in chain0)  # not started afresh: it goes on
    assert "--set train.checkpoint_every_steps=312" in chain0[0]  # a save point every 5000 images at batch 16
    assert len(chain1) == 1 and "--resume" in chain1[0] and chain1[0].endswith("train.steps=1563")
    assert (tmp_path / "seed0_from4992.log").exists() and (tmp_path / "seed1_from19984.log").exists()
    for seed in (0, 1):
        assert runs["medgan"][str(seed)]["status"] == "ok"
        assert sorted(p.name for p in ckpts[seed].iterdir()) == ["step_0000625.pt", "step_0001563.pt"]


def test_a_run_left_with_no_checkpoint_at_all_starts_afresh(tmp_path, monkeypatch):
    plan = plan_steps([10_000], batch_size=16)
    (tmp_path / "seed0" / "samples").mkdir(parents=True)
    (tmp_path / "seed0" / "samples" / "old.png").write_bytes(b"")
    _, started, _ = _train_instantly(monkeypatch, tmp_path, plan, [0])
    assert "--resume" not in started[0][2] and not (tmp_path / "seed0" / "samples" / "old.png").exists()
    assert json.loads((tmp_path / "seed0" / seen.COUNTS_FILE).read_text()) == [625]  # written before training


def test_a_later_study_with_other_counts_keeps_the_count_checkpoints_of_earlier_ones(tmp_path, monkeypatch):
    earlier = plan_steps([10_000, 25_000, 50_000], batch_size=8)  # batch 8: 1250 steps, a multiple of the 625
    folder = tmp_path / "seed0" / "checkpoints"  # steps between save points
    folder.mkdir(parents=True)
    assert seen.count_steps(str(folder.parent), earlier) == {1250, 3125, 6250}
    seen.record_counts(str(folder.parent), {1250, 3125, 6250})  # as the earlier study did before training
    for step in (625, 1250, 1875, 3125, 3750, 6250):  # two of them save points a stopped run left
        (folder / f"step_{step:07d}.pt").write_bytes(b"")
    later = plan_steps([50_000], batch_size=8)  # scoring only 50k again
    runs, started, _ = _train_instantly(monkeypatch, tmp_path, later, [0])
    assert runs["medgan"]["0"]["reused"] and not started
    assert sorted(p.name for p in folder.iterdir()) == ["step_0001250.pt", "step_0003125.pt", "step_0006250.pt"]


def test_scoring_fewer_counts_while_another_study_trains_the_run_on_keeps_the_save_point_it_would_go_on_from(
    tmp_path, monkeypatch
):
    folder = tmp_path / "seed0" / "checkpoints"
    folder.mkdir(parents=True)
    seen.record_counts(str(folder.parent), {1250, 3125, 6250})  # a study to 50k at batch 8, past its 25k count
    for step in (625, 1250, 1875, 2500, 3125, 3750):
        (folder / f"step_{step:07d}.pt").write_bytes(b"")
    runs, started, _ = _train_instantly(monkeypatch, tmp_path, plan_steps([10_000, 25_000], batch_size=8), [0])
    assert runs["medgan"]["0"]["reused"] and not started
    names = ["step_0001250.pt", "step_0003125.pt", "step_0003750.pt"]  # 3750: past this plan's counts, short of 6250
    assert sorted(p.name for p in folder.iterdir()) == names


def test_a_run_folder_from_before_save_points_keeps_every_checkpoint_it_has(tmp_path, monkeypatch):
    folder = tmp_path / "seed0" / "checkpoints"
    folder.mkdir(parents=True)
    for step in (625, 1563, 3125):  # 10k, 25k and 50k images at batch 16, with no record of the counts
        (folder / f"step_{step:07d}.pt").write_bytes(b"")
    runs, started, _ = _train_instantly(monkeypatch, tmp_path, plan_steps([25_000], batch_size=16), [0])
    assert runs["medgan"]["0"]["reused"] and not started and len(list(folder.iterdir())) == 3
    assert sorted(seen.count_steps(str(folder.parent), [])) == [625, 1563, 3125]
