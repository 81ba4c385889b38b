"""The images-seen mode of the small-data study (benchmarks/study/seen*.py): its step plan, its split by
subject, its training command chain and its collapse statistic, checked without training anything."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.study.seen import medgan_command, plan_steps, split_by_subject
from benchmarks.study.seen_score import mean_pairwise_correlation


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


def test_mean_pairwise_correlation_matches_numpy():
    rng = np.random.default_rng(0)
    images = rng.random((6, 8, 8))
    images[1] = images[0] * 2 + 1  # a perfectly correlated pair
    r = np.corrcoef(images.reshape(6, -1))
    expected = r[~np.eye(6, dtype=bool)].mean()
    assert mean_pairwise_correlation(torch.from_numpy(images)) == pytest.approx(expected, abs=1e-6)
    same = torch.from_numpy(np.repeat(images[:1], 4, axis=0))
    assert mean_pairwise_correlation(same) == pytest.approx(1.0, abs=1e-6)  # a collapsed set
