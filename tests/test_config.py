"""Config loading: safe YAML, forbidden extras, overrides, one-line errors naming the key path."""

from __future__ import annotations

import pytest
import yaml
from pydantic import Field

from medgan.config import Section, apply_overrides, dump_config, load_config, parse_override
from medgan.errors import ConfigError


class Optim(Section):
    lr: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.99)


class Data(Section):
    root: str = "data"
    spacing_mm: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0])


class Run(Section):
    name: str = "run"
    steps: int = 100
    optim: Optim = Field(default_factory=Optim)
    data: Data = Field(default_factory=Data)


def write(tmp_path, text: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_resolve_in_order(tmp_path):
    path = write(tmp_path, "steps: 10\noptim:\n  lr: 0.001\n")
    cfg = load_config(Run, path, ["optim.lr=5e-5", "data.spacing_mm=[0.5, 0.5, 2]", "steps=20"])
    assert cfg.steps == 20
    assert cfg.optim.lr == pytest.approx(5e-5)
    assert cfg.optim.betas == (0.0, 0.99)
    assert cfg.data.spacing_mm == [0.5, 0.5, 2.0]


def test_unknown_key_names_the_path_and_the_valid_keys(tmp_path):
    path = write(tmp_path, "optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(Run, path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert "optim.learning_rate" in message
    assert "lr" in message and "betas" in message


def test_wrong_type_names_key_and_expectation(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(Run, None, ["steps=many"])
    message = str(info.value)
    assert "steps" in message and "integer" in message and "'many'" in message


def test_several_problems_are_counted_on_one_line():
    with pytest.raises(ConfigError) as info:
        load_config(Run, None, ["steps=x", "name=[1]", "bogus=1"])
    assert "2 more problems" in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError) as info:
        load_config(Run, path)
    assert "not valid YAML" in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("steps: [1, 2\n", "line"), ("- 1\n- 2\n", "mapping"), ("", None)],
)
def test_malformed_files(tmp_path, text, expected):
    path = write(tmp_path, text)
    if expected is None:
        assert load_config(Run, path) == Run()
        return
    with pytest.raises(ConfigError, match=expected):
        load_config(Run, path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Run, tmp_path / "absent.yaml")


def test_override_syntax():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=") == (["a"], "")
    assert parse_override("a=x=y") == (["a"], "x=y")
    for bad in ("a", "=3", "a..b=1", ".a=1"):
        with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
            parse_override(bad)
    with pytest.raises(ConfigError, match="holds a value"):
        apply_overrides({"steps": 3}, ["steps.x=1"])


def test_overrides_do_not_mutate_their_input():
    data = {"optim": {"lr": 1.0}}
    apply_overrides(data, ["optim.lr=2"])
    assert data == {"optim": {"lr": 1.0}}


def test_dump_round_trips():
    cfg = load_config(Run, None, ["optim.lr=0.5", "data.root=/x"])
    again = Run.model_validate(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def test_assignment_is_validated():
    cfg = Run()
    with pytest.raises(ValueError):
        cfg.steps = "many"  # type: ignore[assignment]
