"""The minutes mode of the small-data study (benchmarks/study/evaluation.py), checked without training."""

from __future__ import annotations

import argparse
import types

import torch

from benchmarks.study import evaluation


def test_the_minutes_mode_draws_with_the_truncation_asked_or_the_generators_own_and_records_it(
    monkeypatch, tmp_path, drawn_psi
):
    asked = drawn_psi
    real = types.SimpleNamespace(extractors={}, diversity=0.3)
    monkeypatch.setattr(evaluation, "real_slices", lambda cfg: None)
    monkeypatch.setattr(evaluation, "_real_set", lambda *a: (torch.rand(10, 16, 16), real))
    monkeypatch.setattr(evaluation, "_floor", lambda real, splits: {})
    monkeypatch.setattr(evaluation, "_untrained", lambda *a: {})
    monkeypatch.setattr(evaluation, "score", lambda name, fake, real: {"name": name})
    monkeypatch.setattr(evaluation, "with_verdict", lambda result, extractors: result)
    runs = {"0": {"checkpoint": "step_0000100.pt", "status": "ok"}, "1": {"status": "failed"}}
    for truncation, used in ((None, 0.9), (0.5, 0.5), (1.0, 1.0)):
        args = argparse.Namespace(device="cpu", splits=1, seeds=[0, 1], stock_seeds=[], samples=10, gen_batch=4,
                                  truncation=truncation, save_samples=False, figure=None)  # fmt: skip
        report: dict = {}
        evaluation.evaluate(args, str(tmp_path), runs, None, report, None, lambda: None)
        seeds = report["evaluation"]["seeds"]
        assert asked[-1] == truncation and seeds["0"]["truncation_psi"] == used
        assert seeds["0"]["checkpoint_step"] == 100 and "error" in seeds["1"]
