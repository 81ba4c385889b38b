"""Label-map-to-image generator with SPADE normalisation, `GENERATORS["spade"]`, in 2D and 3D (Park et al. 2019).

A segmentation (integer label map or one-hot) steers every normalisation layer: features are normalised without
parameters, then scaled and shifted per voxel by convolutions of the label map at that resolution. This keeps the
anatomy of the label map in the output even after many layers, which plain input concatenation loses.

MONAI's `monai.networks.blocks.SPADE` is not used: it calls `x.contiguous()` (undoing channels-last on every layer)
and its gamma/beta convolutions inherit MONAI `Convolution`'s default instance norm, which the paper does not have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from medgan.errors import ConfigError
from medgan.models.layers import LRELU_SLOPE, conv_layer, norm_layer, one_hot, output_activation
from medgan.models.registries import GENERATORS
from medgan.models.shapes import (
    LATENT_CHANNELS,
    check_choice,
    check_equal,
    check_int,
    check_multiple,
    check_spatial_dims,
    level_channels,
    resolve_image_size,
)


class SPADENorm(nn.Module):
    """Parameter-free norm, then x * (1 + gamma(seg)) + beta(seg) with gamma and beta from one fused convolution."""

    def __init__(self, spatial_dims: int, channels: int, num_labels: int, hidden_channels: int, norm: str) -> None:
        super().__init__()
        self.norm = norm_layer(norm, spatial_dims, channels, affine=False)
        self.shared = conv_layer(spatial_dims, num_labels, hidden_channels, 3)
        self.gamma_beta = conv_layer(spatial_dims, hidden_channels, 2 * channels, 3)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.gamma_beta(F.relu(self.shared(seg))).chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class SPADEResBlock(nn.Module):
    """SPADE-norm, leaky ReLU, conv3, twice, plus a (SPADE-normed 1x1) shortcut; keeps the resolution."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        num_labels: int,
        hidden_channels: int,
        norm: str,
        output_bias: bool,
    ) -> None:
        super().__init__()
        mid = min(in_channels, out_channels)
        self.norm0 = SPADENorm(spatial_dims, in_channels, num_labels, hidden_channels, norm)
        # conv0 feeds a parameter-free norm and conv1 (except in the last block) the next block's norms: biases
        # there would have zero gradient.
        self.conv0 = conv_layer(spatial_dims, in_channels, mid, 3, bias=False)
        self.norm1 = SPADENorm(spatial_dims, mid, num_labels, hidden_channels, norm)
        self.conv1 = conv_layer(spatial_dims, mid, out_channels, 3, bias=output_bias)
        self.learned_shortcut = in_channels != out_channels
        if self.learned_shortcut:
            self.norm_s = SPADENorm(spatial_dims, in_channels, num_labels, hidden_channels, norm)
            self.conv_s = conv_layer(spatial_dims, in_channels, out_channels, 1, bias=False)

    def main_convs(self) -> list[nn.Module]:
        """The residual path's convolutions (GauGAN spectral-normalises these, not the SPADE ones)."""
        return [self.conv0, self.conv1] + ([self.conv_s] if self.learned_shortcut else [])

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        dx = self.conv0(F.leaky_relu(self.norm0(x, seg), LRELU_SLOPE))
        dx = self.conv1(F.leaky_relu(self.norm1(dx, seg), LRELU_SLOPE))
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        return shortcut + dx


@GENERATORS.register("spade")
class SPADEGenerator(nn.Module):
    """SPADE generator: label map [B, *spatial] (int) or [B, num_labels, *spatial] (one-hot) -> image.

    The network starts at `image_size / 2**num_upsamples` from either a latent (latent_dim > 0; multimodal output,
    z drawn from torch's RNG when not given) or the downsampled label map (latent_dim = 0; deterministic output),
    then doubles the resolution `num_upsamples` times through SPADE residual blocks.
    """

    kind = "label"

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        num_labels: int,  # number of classes in the label map, background included
        out_channels: int = 1,  # image channels
        image_size: int | Sequence[int] | None = None,  # voxels per axis; None: 256x256 (2D) or 128^3 (3D)
        latent_dim: int = 0,  # 0: start from the label map; >0: start from z (diverse outputs per label map)
        base_channels: int | None = None,  # channels at full resolution; None: 64 (2D) / 32 (3D)
        max_channels: int | None = None,  # channel cap at low resolution; None: 512 (2D) / 256 (3D)
        num_upsamples: int = 5,  # x2 steps; every axis of image_size must be a multiple of 2**num_upsamples
        hidden_channels: int | None = None,  # channels reading the label map in each SPADE norm; None: 128 / 32
        norm: str = "batch",  # parameter-free norm inside SPADE: "batch" (GauGAN) or "instance"
        spectral_norm: bool = False,  # spectral norm on the residual blocks' convolutions (GauGAN: on)
        out_activation: str = "tanh",  # "tanh": output in [-1, 1]; "linear": unbounded
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.num_labels = check_int("num_labels", num_labels, minimum=2)
        self.out_channels = check_int("out_channels", out_channels)
        self.latent_dim = check_int("latent_dim", latent_dim, minimum=0)
        self.image_size = resolve_image_size(image_size, spatial_dims)
        steps = check_int("num_upsamples", num_upsamples, minimum=0)
        check_multiple(self.image_size, 2**steps, "spade generator", f"num_upsamples={steps}")
        check_choice("norm", norm, ("batch", "instance"))
        default_base, default_max = LATENT_CHANNELS[spatial_dims]
        base_channels = check_int("base_channels", default_base if base_channels is None else base_channels)
        max_channels = check_int("max_channels", default_max if max_channels is None else max_channels)
        # GauGAN's 128 hidden channels at full resolution would dominate the cost in 3D (~7 TFLOP per 128^3 sample).
        hidden_channels = check_int(
            "hidden_channels", (128 if spatial_dims == 2 else 32) if hidden_channels is None else hidden_channels
        )
        self.out_activation, self.output_range = output_activation(out_activation)

        channels = level_channels(steps, base_channels, max_channels)
        self.level_sizes = [tuple(s >> (steps - level) for s in self.image_size) for level in range(steps + 1)]
        self.base_channels = channels[0]
        # The stem feeds the first block's parameter-free norms, so a bias would have zero gradient. Weights keep
        # torch's default init (as MONAI's SPADENet): GauGAN's Xavier gain of 0.02 leaves the SPADE convolutions
        # with gradients 1e-8 of the others at the start.
        if latent_dim > 0:
            self.stem = nn.Linear(latent_dim, channels[0] * math.prod(self.level_sizes[0]), bias=False)
        else:
            self.stem = conv_layer(spatial_dims, num_labels, channels[0], 3, bias=False)
        self.blocks = nn.ModuleList(
            SPADEResBlock(
                spatial_dims,
                channels[max(level - 1, 0)],
                channels[level],
                num_labels,
                hidden_channels,
                norm,
                output_bias=level == steps,
            )
            for level in range(steps + 1)
        )
        self.out_conv = conv_layer(spatial_dims, channels[-1], out_channels, 3)
        if spectral_norm:
            for block in self.blocks:
                for conv in block.main_convs():
                    _spectral_norm(conv)

    def check_input_size(self, shape: Sequence[int]) -> None:
        """Raise ConfigError unless `shape` is a label map of `image_size`: (*spatial), (B, *spatial) or
        (B, 1, *spatial) for integer labels, or (B, num_labels, *spatial) for one-hot."""
        shape = tuple(int(s) for s in shape)
        d = self.spatial_dims
        if len(shape) == d + 2 and shape[1] not in (1, self.num_labels):
            raise ConfigError(f"spade generator takes a one-hot map with {self.num_labels} channels, got {shape}")
        if len(shape) not in (d, d + 1, d + 2):
            raise ConfigError(
                f"spade generator takes a label map of shape (B, *spatial) or (B, {self.num_labels}, *spatial) "
                f"with {d} spatial axes, got {shape}"
            )
        check_equal(shape[-d:], self.image_size, "spade generator")

    def forward(self, label_map: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Synthesize images [B, out_channels, *image_size] from a label map (and a latent if latent_dim > 0)."""
        self.check_input_size(label_map.shape)
        if not label_map.dtype.is_floating_point:
            if label_map.dim() == self.spatial_dims + 2 and label_map.shape[1] == 1:
                label_map = label_map[:, 0]  # MONAI pipelines keep a channel axis on label maps
            if label_map.dim() != self.spatial_dims + 1:
                raise ConfigError(f"spade generator takes integer label maps (B, *spatial), got {label_map.shape}")
        elif label_map.dim() != self.spatial_dims + 2 or label_map.shape[1] != self.num_labels:
            raise ConfigError(
                f"spade generator takes one-hot maps (B, {self.num_labels}, *spatial), got {tuple(label_map.shape)}"
            )
        seg = label_map if label_map.dtype.is_floating_point else one_hot(label_map, self.num_labels)
        batch = seg.shape[0]
        if self.latent_dim > 0:
            if z is None:
                z = torch.randn(batch, self.latent_dim, device=seg.device)
            x = self.stem(z).view(batch, self.base_channels, *self.level_sizes[0])
        else:
            if z is not None:
                raise ConfigError("spade generator was built with latent_dim=0: pass z=None")
            x = self.stem(F.interpolate(seg, size=self.level_sizes[0], mode="nearest"))
        for level, block in enumerate(self.blocks):
            if level > 0:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            # One resize of the label map per level (shared by the level's SPADE norms), not one per norm.
            level_seg = seg if level == len(self.blocks) - 1 else F.interpolate(seg, self.level_sizes[level])
            x = block(x, level_seg)
        return self.out_activation(self.out_conv(F.leaky_relu(x, LRELU_SLOPE)))
