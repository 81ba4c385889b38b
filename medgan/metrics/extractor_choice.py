"""Which feature extractors a `medgan evaluate` run uses, with which options, built for its images.

    choices = choose_extractors(None, {"seed": 1})        # every installed offline extractor; seed to random_cnn
    nets, notes = build_extractors(choices, spatial_dims=3, mode="auto")
    # {"random_cnn_seed1": (FeatureExtractor, "native"), "efficientnet_lite0_2.5d": (FeatureExtractor, "2.5d")}

Everything here runs before any image is read, so a wrong name or option costs no minutes of work.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from medgan.errors import ConfigError
from medgan.metrics.extractor import FeatureExtractor, check_option_types
from medgan.metrics.extractor_files import load_extractor_file
from medgan.metrics.features import EXTRACTORS, installed_extractors

__all__ = ["build_extractor", "build_extractors", "choose_extractors"]


def build_extractor(
    name: str, spatial_dims: int, mode: str = "auto", options: dict[str, Any] | None = None
) -> tuple[FeatureExtractor, str]:
    """The extractor for images of `spatial_dims`, and the mode: "native" or "2.5d".

    auto: 2D images go through a 2D extractor; 3D images through a 3D one when the extractor can
    be 3D (random_cnn, a file with spatial_dims=3), else as 2.5D.
    """
    options = dict(options or {})
    _check_options(name, options)
    if mode not in ("auto", "native", "2.5d"):
        raise ConfigError(f"feature mode must be auto, native or 2.5d; got {mode!r}")
    if mode == "2.5d" and spatial_dims != 3:
        raise ConfigError("2.5D scoring is for 3D images; these are 2D")
    if name == "file":
        dims = int(options.get("spatial_dims", 2))
        if dims == 3 and spatial_dims == 2:
            raise ConfigError("the extractor file takes 3D images (spatial_dims=3) but the images are 2D")
        chosen = "native" if dims == spatial_dims else "2.5d"
        if mode == "native" and chosen != "native":
            raise ConfigError("--mode native needs a 3D extractor file (--extractor-option spatial_dims=3)")
        if mode == "2.5d" and dims != 2:
            raise ConfigError("--mode 2.5d needs a 2D extractor file")
        return EXTRACTORS.build("file", **options), chosen
    three_d = name == "random_cnn"
    if mode == "native" and spatial_dims == 3 and not three_d:
        raise ConfigError(f"{name} is 2D only; score 3D images with --mode 2.5d (or auto)")
    chosen = "native" if spatial_dims == 2 or (three_d and mode != "2.5d") else "2.5d"
    dims = spatial_dims if chosen == "native" else 2
    return EXTRACTORS.build(name, spatial_dims=dims, **options), chosen


def _valid_options(name: str) -> list[str]:
    builder = load_extractor_file if name == "file" else EXTRACTORS.get(name)
    return [p for p in inspect.signature(builder).parameters if p != "spatial_dims" or name == "file"]


def _check_options(name: str, options: dict[str, Any]) -> None:
    """Unknown extractor options, or values of the wrong type, are one-line errors (not a TypeError)."""
    valid = _valid_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for the {name} extractor (valid: {', '.join(valid) or 'none'})"
        )
    check_option_types(options)


def choose_extractors(
    extractor: str | Sequence[str] | None, options: dict[str, Any] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The extractors of a run, each with its options, checked before any image is read.

    None: every installed offline extractor (`installed_extractors`), after the user's file when options
    name one (`path`). With a file in the run, the options are the file's; otherwise each option goes to
    every extractor that takes it (seed and input_size to random_cnn), and one that none takes is an error.
    """
    options = dict(options or {})
    if extractor is None:
        names = (["file"] if "path" in options else []) + installed_extractors()
    else:
        names = list(dict.fromkeys([extractor] if isinstance(extractor, str) else extractor))
        if not names:
            raise ConfigError("name at least one feature extractor")
    for name in names:
        EXTRACTORS.get(name)  # a did-you-mean for a typo
    if "file" in names:
        _check_options("file", options)
        return [(name, options if name == "file" else {}) for name in names]
    valid = {name: _valid_options(name) for name in names}
    unknown = sorted(k for k in options if not any(k in v for v in valid.values()))
    if unknown:
        takes = list(dict.fromkeys(p for v in valid.values() for p in v))
        which = names[0] if len(names) == 1 else " and ".join(names)
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for the {which} extractor{'s' if len(names) > 1 else ''} "
            f"(valid: {', '.join(takes) or 'none'})"
        )
    check_option_types(options)
    return [(name, {k: v for k, v in options.items() if k in valid[name]}) for name in names]


def build_extractors(
    choices: list[tuple[str, dict[str, Any]]], spatial_dims: int, mode: str, automatic: bool = False
) -> tuple[dict[str, tuple[FeatureExtractor, str]], list[str]]:
    """tag -> (extractor, mode) for each choice, and a note for each left out. A 2D-only built-in extractor
    chosen automatically is left out (with a note) when `--mode native` asks 3D images to be scored whole."""
    nets, notes = {}, []
    for name, options in choices:
        if automatic and name not in ("file", "random_cnn") and spatial_dims == 3 and mode == "native":
            notes.append(f"{name} left out: it is 2D only and --mode native scores the 3D images whole")
            continue
        net, chosen = build_extractor(name, spatial_dims, mode, options)
        tag = net.name + ("_2.5d" if chosen == "2.5d" else "")
        if tag in nets:
            raise ConfigError(f"two extractors are named {tag}: name the file's with --extractor-option name=...")
        nets[tag] = (net, chosen)
    return nets, notes
