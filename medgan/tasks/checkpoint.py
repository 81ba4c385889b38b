"""Checkpoints: state dicts + the resolved config + a format version, written atomically.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so it loads with
`torch.load(..., weights_only=True)`: no pickled classes that break when code moves
(StyleGAN's lesson). It is written to a hidden temporary file and renamed, so a run folder
never holds a half-written one, even if the process dies mid-write.

    {"format_version": 1, "config": {...}, "step": int, "images_seen": int, "world_size": int,
     "networks": {name: state_dict}, "ema": {name: state_dict}, "optimizers": {...},
     "scalers": {...}, "ranks": [per-rank random, objective and augmentation states],
     "data_record": {...}}

Training writes them (`medgan.training.run_state` gathers what goes in); inference reads the
config, the data record and the EMA weights.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

import torch

from medgan.errors import ConfigError, InputError
from medgan.io.atomic import atomic_file
from medgan.tasks.config import architecture_of

__all__ = [
    "FORMAT_VERSION",
    "check_compatible",
    "check_same_data",
    "checkpoint_paths",
    "checkpoint_step",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d+)\.pt$")
_REQUIRED = ("format_version", "config", "step", "networks")


def checkpoint_step(path: str) -> int | None:
    """The step a checkpoint file's name gives (`step_NNNNNNN.pt`); None for any other name."""
    match = _NAME.match(os.path.basename(path))
    return int(match.group(1)) if match else None


def checkpoint_paths(run_dir: str) -> list[str]:
    """The run's checkpoints, oldest first (temporary `.partial` files are not checkpoints)."""
    found = []
    for path in glob.glob(os.path.join(run_dir, "checkpoints", "step_*.pt")):
        step = checkpoint_step(path)
        if step is not None:
            found.append((step, path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: str) -> str | None:
    paths = checkpoint_paths(run_dir)
    return paths[-1] if paths else None


def save_checkpoint(run_dir: str, step: int, state: dict[str, Any], keep: int = 3) -> str:
    """Write `checkpoints/step_NNNNNNN.pt` atomically; delete all but the newest `keep`."""
    path = os.path.join(run_dir, "checkpoints", f"step_{step:07d}.pt")
    with atomic_file(path, overwrite=True, suffix=".pt") as temp:
        torch.save({"format_version": FORMAT_VERSION, **state}, temp)
    for old in checkpoint_paths(run_dir)[:-keep]:
        os.remove(old)
    return path


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; a damaged or foreign file is an `InputError` naming it."""
    if not os.path.isfile(path):
        raise InputError("no such checkpoint file", path=path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip, pickle and EOF errors from a truncated or foreign file
        raise InputError(
            f"not a readable medgan checkpoint ({type(err).__name__}: truncated, corrupted or not a checkpoint); "
            "use another checkpoint of the run, or retrain",
            path=path,
        ) from None
    if not isinstance(state, dict) or any(key not in state for key in _REQUIRED):
        raise InputError("not a medgan checkpoint (it lacks the networks, config or step)", path=path)
    if state["format_version"] != FORMAT_VERSION:
        raise InputError(
            f"checkpoint format version {state['format_version']} is not {FORMAT_VERSION}, the version "
            "this medgan reads; use the medgan release that wrote it",
            path=path,
        )
    return state


def check_compatible(stored_config: dict[str, Any], config: dict[str, Any], path: str) -> None:
    """Refuse a checkpoint whose networks were built from a different configuration."""
    stored, current = architecture_of(stored_config), architecture_of(config)
    for key in stored:
        if stored[key] != current[key]:
            raise ConfigError(
                f"checkpoint was trained with {key} = {_short(stored[key])}, "
                f"but this config has {_short(current[key])}; "
                "resume with the run's own config.yaml or start a new --run-dir",
                path=path,
            )


# What the generator learned to map its output back to physical units with: a resumed run must keep it.
_DATA_KEYS = {
    "window": "the intensity window (data.window)",
    "source_window": "the source's intensity window (data.source_window)",
    "spacing_mm": "the voxel spacing (data.spacing_mm)",
    "slice_spacing_mm": "the slice spacing",
    "modality": "the modality",
    "units": "the intensity units",
}


def check_same_data(stored: dict[str, Any], current: dict[str, Any], path: str) -> None:
    """Refuse to resume on data described differently from the checkpoint's (a changed window or spacing
    would silently rescale what the generator has learned). Keys an older checkpoint lacks are not compared."""
    for key, what in _DATA_KEYS.items():
        if key not in stored or key not in current:
            continue
        old, new = stored[key], current[key]
        if _differs(old, new):
            hint = f"; set data.window={_short(old)} to keep it" if key == "window" and old is not None else ""
            raise ConfigError(
                f"checkpoint was trained with {what} {_short(old)}, but the data now gives {_short(new)}{hint}; "
                "resume on the same data and settings, or start a new --run-dir",
                path=path,
            )


def _differs(old: Any, new: Any) -> bool:
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        return len(old) != len(new) or any(_differs(a, b) for a, b in zip(old, new, strict=True))
    if isinstance(old, int | float) and isinstance(new, int | float):
        return abs(float(old) - float(new)) > 1e-6 * max(1.0, abs(float(old)))
    return old != new


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
