"""User-supplied feature extractors (RadImageNet, MedicalNet, your own), checked before loading.

    extractor = load_extractor_file("radimagenet_r50.pt", sha256="9f2c...", spatial_dims=2,
                                    in_channels=3, input_size=224)

The file is hashed first and refused unless its SHA-256 equals the one given, so a metric can
never silently come from a different network. Three kinds of file are understood:

* TorchScript (`torch.jit.save`): a zip holding `constants.pkl` or `code/`; must map
  `[B, in_channels, *input_size]` to `[B, D]` (a feature map `[B, D, *]` is averaged);
* a `torch.export` program (`.pt2`, `torch.export.save`), same contract;
* a state dict (`torch.save(model.state_dict())`, loaded with `weights_only=True`) for an
  architecture medgan can build: `random_cnn`, `efficientnet_lite0`, or MONAI's `resnet10`,
  `resnet18`, `resnet34`, `resnet50` (features before the classifier); `arch_options` go to the
  MONAI constructor (e.g. `shortcut_type`, `bias_downsample`, `conv1_t_stride`).
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from typing import Any

import torch
from torch import nn

from medgan.errors import ConfigError, InputError
from medgan.metrics.extractor import FeatureExtractor, PooledEfficientNet, RandomCNN, check_option_types, sha256_of

__all__ = ["STATE_DICT_ARCHITECTURES", "load_extractor_file"]

STATE_DICT_ARCHITECTURES = ("random_cnn", "efficientnet_lite0", "resnet10", "resnet18", "resnet34", "resnet50")
_ARCH_PREPROCESSING = {
    "random_cnn": {"input_mean": 0.5, "input_std": 0.5},
    "efficientnet_lite0": {"in_channels": 3, "input_size": 224, "input_mean": 127 / 255, "input_std": 128 / 255},
}
_PREFIXES = ("module.", "model.", "backbone.", "encoder.")  # wrappers that training scripts add


def load_extractor_file(
    path: str | os.PathLike,
    sha256: str | None,  # the expected SHA-256 of the file (64 hex digits); required
    spatial_dims: int = 2,  # 2 or 3: what the network takes
    architecture: str | None = None,  # state-dict files only: one of STATE_DICT_ARCHITECTURES
    in_channels: int | None = None,  # the image channel is repeated to this many; default 1
    input_size: int | None = None,  # voxels per axis; default 224 in 2D, 96 in 3D
    input_mean: float | None = None,  # network input = (image in [0, 1] - input_mean) / input_std; default 0
    input_std: float | None = None,  # default 1
    name: str | None = None,  # for metric keys; default: the file's stem
    arch_options: dict[str, Any] | None = None,
) -> FeatureExtractor:
    """Verify `path` against `sha256`, load it, and wrap it as a FeatureExtractor.

    For the architectures medgan builds itself, unset preprocessing options take that
    architecture's own (random_cnn: mean 0.5, std 0.5; efficientnet_lite0: 3 channels, 224 px,
    mean 127/255, std 128/255).
    """
    path = os.fspath(path)
    check_option_types(
        {
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "input_size": input_size,
            "input_mean": input_mean,
            "input_std": input_std,
            "name": name,
        }
    )
    defaults = {
        "in_channels": 1,
        "input_size": None,
        "input_mean": 0.0,
        "input_std": 1.0,
        **_ARCH_PREPROCESSING.get(architecture, {}),
    }
    in_channels = defaults["in_channels"] if in_channels is None else in_channels
    input_size = defaults["input_size"] if input_size is None else input_size
    input_mean = defaults["input_mean"] if input_mean is None else input_mean
    input_std = defaults["input_std"] if input_std is None else input_std
    if not os.path.isfile(path):
        raise InputError("no such extractor file", path=path)
    expected = _check_digest(sha256)
    actual = sha256_of(path)
    if actual != expected:
        raise InputError(
            f"SHA-256 is {actual}, not the expected {expected}; refusing to load a different extractor", path=path
        )
    if spatial_dims not in (2, 3):
        raise ConfigError(f"extractor spatial_dims must be 2 or 3; got {spatial_dims}")
    kind = _kind(path)
    if kind == "state_dict":
        network = _from_state_dict(path, architecture, spatial_dims, in_channels, arch_options or {})
    elif architecture is not None or arch_options:
        raise ConfigError(f"{os.path.basename(path)} is a {kind} file: architecture options apply to state dicts only")
    else:
        network = _load_program(path, kind)
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", os.path.basename(path).split(".")[0]).strip("_") or "user"
    side = input_size if input_size is not None else (224 if spatial_dims == 2 else 96)
    extractor = FeatureExtractor(
        name=name or stem,
        network=network,
        spatial_dims=spatial_dims,
        input_size=(int(side),) * spatial_dims,
        in_channels=int(in_channels),
        input_mean=float(input_mean),
        input_std=float(input_std),
        provenance={
            "weights": f"user file {os.path.basename(path)} ({kind})",
            "weights_sha256": actual,
            "architecture": architecture,
        },
    )
    _try_once(extractor, path)
    return extractor


def _try_once(extractor: FeatureExtractor, path: str) -> None:
    """Run two blank inputs through the network now, so a wrong input shape is one line at load time,
    not a traceback after minutes of reading images."""
    shape = (2, extractor.in_channels, *extractor.input_size)
    settings = (
        f"in_channels={extractor.in_channels}, input_size={extractor.input_size[0]}, "
        f"spatial_dims={extractor.spatial_dims}"
    )
    try:
        out = extractor.embed(torch.zeros(shape))
    except ConfigError as err:
        raise ConfigError(
            f"{err.reason}; now {settings}: set what the network takes with --extractor-option "
            "in_channels=N, input_size=N or spatial_dims=2|3 (a torch.export program also needs a dynamic batch axis)",
            path=path,
        ) from None
    if out.ndim != 2 or out.shape[0] != shape[0] or out.shape[1] < 1:
        raise ConfigError(
            f"maps inputs {'x'.join(map(str, shape))} to {'x'.join(map(str, out.shape))}, not to features "
            f"[batch, D] (or a feature map [batch, D, ...]); now {settings}",
            path=path,
        )


def _check_digest(sha256: str | None) -> str:
    if not sha256:
        raise ConfigError(
            "an extractor file needs its expected SHA-256 (--extractor-sha256; `sha256sum FILE` prints it)"
        )
    digest = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ConfigError(f"the expected SHA-256 must be 64 hexadecimal digits; got {sha256!r}")
    return digest


def _kind(path: str) -> str:
    if path.lower().endswith(".pt2"):
        return "torch.export"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "TorchScript"
    return "state_dict"


def _load_program(path: str, kind: str) -> nn.Module:
    try:
        if kind == "torch.export":
            return torch.export.load(path).module()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still the common format
            return torch.jit.load(path, map_location="cpu")
    except Exception as err:  # a corrupt or foreign file: one line for the user
        raise InputError(f"cannot load this {kind} file ({type(err).__name__}: {err})", path=path) from None


def _from_state_dict(path: str, architecture: str | None, spatial_dims: int, in_channels: int, options: dict):
    if architecture not in STATE_DICT_ARCHITECTURES:
        raise ConfigError(
            f"{os.path.basename(path)} holds a state dict: choose its architecture "
            f"(--extractor-arch) from {', '.join(STATE_DICT_ARCHITECTURES)}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(f"cannot read a state dict from this file ({type(err).__name__})", path=path) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # Lightning-style checkpoints
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError("is not a state dict (a mapping of parameter names to tensors)", path=path)
    network, head = _build(architecture, spatial_dims, in_channels, options)
    target = network.model if isinstance(network, PooledEfficientNet) else network
    state = {_strip(k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not any(k.startswith(h) for h in head)}
    missing, unexpected = _key_mismatch(target, state, head)
    if missing or unexpected:
        pairs = (("missing", missing), ("unexpected", unexpected))
        detail = "; ".join(f"{label} {len(keys)} keys (e.g. {', '.join(keys[:3])})" for label, keys in pairs if keys)
        raise InputError(f"does not fit {architecture}: {detail}", path=path)
    try:
        target.load_state_dict(state, strict=not head)  # a head left out of the file stays as built
    except RuntimeError as err:
        raise InputError(f"does not fit {architecture}: {' '.join(str(err).split())[:300]}", path=path) from None
    return network


def _build(architecture: str, spatial_dims: int, in_channels: int, options: dict) -> tuple[nn.Module, tuple[str, ...]]:
    """The network and the key prefixes of its classifier head (dropped from the file's state)."""
    with torch.random.fork_rng(devices=[]):
        if architecture == "random_cnn":
            return RandomCNN(spatial_dims, **options), ()
        if architecture == "efficientnet_lite0":
            if spatial_dims != 2 or in_channels != 3:
                raise ConfigError(
                    "efficientnet_lite0 takes 2D images with 3 channels (--extractor-option in_channels=3)"
                )
            from efficientnet_lite_pytorch import EfficientNet

            return PooledEfficientNet(EfficientNet.from_name("efficientnet-lite0")), ("_fc.",)
        from monai.networks.nets import resnet

        builder = getattr(resnet, architecture)
        network = builder(spatial_dims=spatial_dims, n_input_channels=in_channels, feed_forward=False, **options)
        return network, ("fc.",)


def _strip(key: str) -> str:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _key_mismatch(network: nn.Module, state: dict, head: tuple[str, ...]) -> tuple[list[str], list[str]]:
    own = {k for k in network.state_dict() if not any(k.startswith(h) for h in head)}
    return sorted(own - set(state)), sorted(set(state) - own)
