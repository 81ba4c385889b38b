"""Configs are data: YAML (safe_load) validated once, at the edge, into pydantic models.

Every config model derives from `Section` (extra keys forbidden). `load_config` reads a
YAML file, applies `--set a.b=value` overrides and validates; any mistake becomes one
`ConfigError` line naming the key path and what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from medgan.errors import ConfigError

__all__ = ["Section", "apply_overrides", "dump_config", "load_config", "parse_override"]


class Section(BaseModel):
    """Base of every config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


M = TypeVar("M", bound=BaseModel)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"train.lr=1e-4"` -> `(["train", "lr"], 0.0001)`. The value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set data.spacing_mm=[1,1,1]")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({_yaml_problem(err)})") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of `data` with each `a.b=value` override applied (later ones win)."""
    result = _deep_copy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = result
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError(f"--set {text!r}: {where} holds a value, not a section")
            node = child
        node[keys[-1]] = value
    return result


def load_config(
    model: type[M],
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    *,
    defaults: Mapping[str, Any] | None = None,
) -> M:
    """Load `path` (YAML) over `defaults`, apply overrides, validate into `model`."""
    data: dict[str, Any] = _deep_copy(dict(defaults or {}))
    source = "config"
    if path is not None:
        source = os.fspath(path)
        data = _merge(data, read_yaml(path))
    data = apply_overrides(data, overrides)
    # A model may pick a more specific one from the data itself (TrainConfig: the task's own options).
    model = model.model_for(data) if hasattr(model, "model_for") else model
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, model), path=source) from None


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError("config file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config ({err.__class__.__name__}: {err})", path=path) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML ({_yaml_problem(err)})", path=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be a mapping of keys, found {type(data).__name__}", path=path)
    return data


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML, in field order: what `--dry-run` prints and runs store."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=None)


def describe_validation_error(err: ValidationError, model: type[BaseModel]) -> str:
    """One line for the first problem, with the key path; the count of any others."""
    errors = err.errors(include_url=False)
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    key = ".".join(loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        valid = _fields_at(model, first["loc"][:-1])
        hint = f" (valid keys: {', '.join(valid)})" if valid else ""
        message = f"unknown key {key!r}{hint}"
    elif first["type"] == "missing":
        message = f"{key}: required key is missing"
    elif not loc and first["type"] == "value_error":  # a check across sections says itself what it is about
        message = first["msg"].removeprefix("Value error, ")
    else:
        got = first.get("input")
        message = f"{key}: {first['msg'][0].lower()}{first['msg'][1:]}"
        if not isinstance(got, dict | BaseModel):  # a whole section's check names its own values
            message += f", got {repr(got) if not isinstance(got, list) else 'list'}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return message


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None:
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else str(problem)
