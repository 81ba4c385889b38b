"""Every registered degradation: records, determinism, replay, batching, 2D/3D, dtypes and parameter checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgan.cli.degrade import KINDS
from medgan.data.degradations import DEGRADATIONS
from medgan.errors import ConfigError

NAMES = DEGRADATIONS.names()
SPACING = {2: (1.0, 1.0), 3: (1.0, 1.0, 2.0)}
FAST = {"ct-lowdose": {"views": 32}}  # small images need few views; keeps the suite quick


def sample_input(kind: str, dims: int, batch: int = 3) -> torch.Tensor:
    shape = (24, 20) if dims == 2 else (16, 14, 8)
    rng = np.random.default_rng(dims)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(g**2 for g in grids) < 0.7
    values = rng.random((batch, 1, *shape))
    if kind.startswith("ct-"):
        return torch.from_numpy(np.where(inside, 40.0 * values, -1000.0)).float()  # soft tissue in air, HU
    return torch.from_numpy(inside * (100.0 + 30.0 * values)).float()


def build(kind: str, **params):
    """Resolution kinds go back to the input grid, so items drawn with different sizes stack."""
    grid = {"back_to_input_grid": True} if DEGRADATIONS.get(kind).changes_grid else {}
    return DEGRADATIONS.build(kind, **{**FAST.get(kind, {}), **grid, **params})


def test_the_cli_lists_every_registered_kind():
    assert sorted(KINDS) == NAMES


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", NAMES)
def test_records_are_json_and_replay_exactly_and_the_seed_decides(kind, dims):
    x = sample_input(kind, dims)
    degradation = build(kind, severity=(0.2, 0.9))
    records = degradation.sample(3, 11, spacing_mm=SPACING[dims])
    assert records == degradation.sample(3, 11, spacing_mm=SPACING[dims])
    assert records != degradation.sample(3, 12, spacing_mm=SPACING[dims])
    replayed = json.loads(json.dumps(records))
    y = degradation.apply(x, records, SPACING[dims])
    assert torch.equal(y, degradation.apply(x, replayed, SPACING[dims]))
    assert torch.equal(y, DEGRADATIONS.build(kind).apply(x, replayed, SPACING[dims]))  # the record alone suffices
    assert all(r["kind"] == kind and 0.2 <= r["severity"] <= 0.9 for r in records)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", NAMES)
def test_a_batch_of_different_records_equals_each_item_alone(kind, dims):
    x = sample_input(kind, dims)
    degradation = build(kind, severity=(0.0, 1.0))
    records = degradation.sample(3, 4, spacing_mm=SPACING[dims])
    together = degradation.apply(x, records, SPACING[dims])
    apart = torch.cat([degradation.apply(x[i : i + 1], records[i : i + 1], SPACING[dims]) for i in range(3)])
    assert together.shape == x.shape
    torch.testing.assert_close(together, apart, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("kind", NAMES)
def test_output_keeps_the_input_dtype_and_device_and_does_not_touch_the_input(kind, dtype):
    x = sample_input(kind, 2, batch=1).to(dtype)
    before = x.clone()
    y, records = build(kind)(x, SPACING[2], 0)
    assert y.dtype == dtype and y.device == x.device and torch.equal(x, before)
    assert torch.isfinite(y.float()).all()
    if dtype == torch.bfloat16:
        reference = build(kind).apply(x.float(), records, SPACING[2])
        scale = float(reference.abs().max())
        assert float((y.float() - reference).abs().max()) <= 0.02 * scale


@pytest.mark.parametrize("kind", NAMES)
def test_more_severity_degrades_more(kind):
    x = sample_input(kind, 2, batch=2)
    change = []
    for severity in (0.0, 1.0):
        y, _ = build(kind, severity=severity)(x, SPACING[2], 3)
        change.append(float((y - x).abs().mean()))
    assert change[1] > change[0], change


@pytest.mark.parametrize("kind", NAMES)
def test_every_numeric_parameter_out_of_range_fails_with_one_line_naming_it(kind):
    for param in DEGRADATIONS.get(kind).params:
        if param.kind in ("float", "int"):
            value = param.high * 10 + 1
            with pytest.raises(ConfigError) as info:
                DEGRADATIONS.build(kind, **{param.name: value})
            message = str(info.value)
            assert "\n" not in message and param.name in message and "valid" in message, message
        elif param.kind == "choice":
            with pytest.raises(ConfigError, match=param.name):
                DEGRADATIONS.build(kind, **{param.name: "nonsense"})
    with pytest.raises(ConfigError, match="unknown parameter 'nonsense'"):
        DEGRADATIONS.build(kind, nonsense=1)
    with pytest.raises(ConfigError, match="severity"):
        DEGRADATIONS.build(kind, severity=1.5)


def test_unknown_kind_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'ct-lowdose'"):
        DEGRADATIONS.build("ct-lowdos")


AXIS_NAMES = ("axis", "slice_axis", "readout_axis")
WHOLE_IN_2D = ("ct-lowdose", "downsample")  # these take a 2D image whole: their axis is for volumes
AXIS_KINDS = [
    k for k in NAMES if k not in WHOLE_IN_2D and any(p.name in AXIS_NAMES for p in DEGRADATIONS.get(k).params)
]


@pytest.mark.parametrize("kind", AXIS_KINDS)
def test_an_axis_beyond_a_2d_image_fails_with_one_line_naming_it(kind):
    name = next(p.name for p in DEGRADATIONS.get(kind).params if p.name in AXIS_NAMES)
    x = sample_input(kind, 2, batch=1)
    degradation = build(kind, **{name: 2})
    with pytest.raises(ConfigError, match=f"{name} = 2 names no axis of a 2D image"):
        degradation.apply(x, degradation.sample(1, 0, spacing_mm=SPACING[2]), SPACING[2])
