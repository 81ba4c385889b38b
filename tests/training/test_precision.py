"""Which precision `auto` and an explicit bf16 give: bfloat16 only where the device runs it natively."""

from __future__ import annotations

import glob
import logging
import os

import pytest
import torch
import yaml

from medgan.errors import ConfigError
from medgan.training import precision as prec

CPU = torch.device("cpu")
REPO = os.path.join(os.path.dirname(__file__), "..", "..")


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_picks_bf16_on_a_cpu_only_where_it_is_native(monkeypatch, native, expected):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    assert prec.native_bf16(CPU) is native
    assert prec.resolve_precision("auto", CPU) == expected


def test_a_cpu_build_without_the_onednn_check_counts_as_emulating(monkeypatch):
    def missing():
        raise RuntimeError("no such operator mkldnn::_is_mkldnn_bf16_supported")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", missing)
    assert prec.native_bf16(CPU) is False
    assert prec.resolve_precision("auto", CPU) == "fp32"


def test_an_explicit_bf16_is_kept_and_warned_about_only_where_it_is_emulated(monkeypatch, caplog):
    for native, warned in ((False, True), (True, False)):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda native=native: native)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=prec.__name__):
            assert prec.resolve_precision("bf16", CPU) == "bf16"
            assert prec.resolve_precision("fp32", CPU) == "fp32"
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == int(warned)
        if warned:
            assert "train.precision" in messages[0] and "auto" in messages[0] and "slower" in messages[0]


def test_fp16_on_the_cpu_is_refused():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        prec.resolve_precision("fp16", CPU)


def test_no_shipped_config_forces_bf16():
    """An explicit bf16 would run emulated, about 10x slower, on every CPU without AVX-512: configs say auto."""
    paths = sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml")))
    assert len(paths) > 10
    forced = []
    for path in paths:
        with open(path) as fh:
            train = (yaml.safe_load(fh) or {}).get("train") or {}
        if train.get("precision") == "bf16":
            forced.append(os.path.basename(path))
    assert forced == []
    with open(os.path.join(REPO, "configs", "synth2d_64.yaml")) as fh:
        assert yaml.safe_load(fh)["train"]["precision"] == "auto"


def test_a_gpu_counts_as_native_only_when_it_computes_bf16_itself(monkeypatch):
    """Pre-Ampere GPUs report bf16 support through emulation; auto gives them fp32."""
    asked = []

    def supported(including_emulation=True):
        asked.append(including_emulation)
        return including_emulation  # a GPU that only emulates bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert prec.native_bf16(torch.device("cuda")) is False and asked == [False]
    assert prec.resolve_precision("auto", torch.device("cuda")) == "fp32"
