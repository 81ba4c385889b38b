"""Residual upsampling latent generator, `GENERATORS["resgen"]` (SNGAN/BigGAN family), in 2D and 3D.

z -> linear -> a 4-voxel-per-axis feature map -> residual blocks that each double the resolution, with
class-conditional batch (or instance) norm when `num_classes` > 0 (Miyato & Koyama 2018; Brock et al. 2019).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medgan.models.layers import (
    apply_spectral_norm,
    channel_view,
    conv_layer,
    init_xavier,
    norm_layer,
    output_activation,
)
from medgan.models.registries import GENERATORS
from medgan.models.shapes import (
    LATENT_CHANNELS,
    check_choice,
    check_int,
    check_labels,
    check_latent_shape,
    check_spatial_dims,
    level_channels,
    pyramid_plan,
    resolve_image_size,
)


class ConditionalNorm(nn.Module):
    """Parameter-free batch/instance norm followed by a per-class (or, unconditionally, learned) scale and shift."""

    def __init__(self, spatial_dims: int, channels: int, num_classes: int, norm: str) -> None:
        super().__init__()
        self.channels = channels
        self.norm = norm_layer(norm, spatial_dims, channels, affine=False)
        if num_classes > 0:
            self.embed = nn.Embedding(num_classes, 2 * channels)
            with torch.no_grad():  # scale ~ N(1, 0.02), shift 0 (DCGAN's norm init), so classes differ from step 0
                self.embed.weight[:, :channels].normal_(1.0, 0.02)
                self.embed.weight[:, channels:].zero_()
            self.scale = self.shift = None
        else:
            self.embed = None
            self.scale = nn.Parameter(torch.ones(channels))
            self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        x = self.norm(x)
        if self.embed is None:
            return x * channel_view(self.scale, x) + channel_view(self.shift, x)
        scale, shift = self.embed(labels).chunk(2, dim=1)
        return x * channel_view(scale, x) + channel_view(shift, x)


class UpBlock(nn.Module):
    """norm-ReLU-upsample-conv3-norm-ReLU-conv3, plus a 1x1-conv shortcut; doubles the resolution."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, num_classes: int, norm: str) -> None:
        super().__init__()
        self.norm0 = ConditionalNorm(spatial_dims, in_channels, num_classes, norm)
        # Convolutions that feed a normalisation carry no bias: the norm subtracts the mean, so a bias would be
        # a parameter with zero gradient.
        self.conv0 = conv_layer(spatial_dims, in_channels, out_channels, 3, bias=False)
        self.norm1 = ConditionalNorm(spatial_dims, out_channels, num_classes, norm)
        self.conv1 = conv_layer(spatial_dims, out_channels, out_channels, 3, bias=False)
        self.shortcut = conv_layer(spatial_dims, in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = F.relu(self.norm0(x, labels))
        h = self.conv0(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.conv1(F.relu(self.norm1(h, labels)))
        # A 1x1 convolution commutes with nearest upsampling: convolve first, at a quarter (2D) or an eighth (3D)
        # of the cost.
        return h + F.interpolate(self.shortcut(x), scale_factor=2.0, mode="nearest")


@GENERATORS.register("resgen")
class ResGenerator(nn.Module):
    """Residual upsampling generator with class-conditional normalisation, 2D or 3D.

    `forward(z [B, latent_dim], labels LongTensor[B] | None) -> [B, out_channels, *image_size]`, in `output_range`.
    Every axis of `image_size` must be 4 * 2^n. Cheaper per sample than "stylegan" (no modulation, no mapping MLP)
    and a good first choice in 3D.
    """

    kind = "latent"

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        out_channels: int = 1,  # image channels (1 for CT/MR)
        image_size: int | Sequence[int] | None = None,  # voxels per axis; None: 256x256 (2D) or 128^3 (3D)
        latent_dim: int = 256,  # size of z
        num_classes: int = 0,  # 0: unconditional; >0: class-conditional norm in every block
        base_channels: int | None = None,  # channels at full resolution; None: 64 (2D) / 32 (3D)
        max_channels: int | None = None,  # channel cap at low resolution; None: 512 (2D) / 256 (3D)
        norm: str = "batch",  # "batch" or "instance" (parameter-free, then conditional scale/shift)
        spectral_norm: bool = False,  # spectral norm on every conv/linear (BigGAN uses it in G too)
        out_activation: str = "tanh",  # "tanh": output in [-1, 1]; "linear": unbounded
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.image_size = resolve_image_size(image_size, spatial_dims)
        self.base_shape, steps = pyramid_plan(self.image_size, "resgen generator")
        default_base, default_max = LATENT_CHANNELS[spatial_dims]
        base_channels = check_int("base_channels", default_base if base_channels is None else base_channels)
        max_channels = check_int("max_channels", default_max if max_channels is None else max_channels)
        self.out_channels = check_int("out_channels", out_channels)
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.num_classes = check_int("num_classes", num_classes, minimum=0)
        check_choice("norm", norm, ("batch", "instance"))
        self.out_activation, self.output_range = output_activation(out_activation)

        channels = level_channels(steps, base_channels, max_channels)
        self.base_channels = channels[0]
        self.fc = nn.Linear(latent_dim, channels[0] * math.prod(self.base_shape), bias=False)
        self.blocks = nn.ModuleList(
            UpBlock(spatial_dims, channels[level - 1], channels[level], num_classes, norm)
            for level in range(1, steps + 1)
        )
        self.out_norm = norm_layer(norm, spatial_dims, channels[-1])
        self.out_conv = conv_layer(spatial_dims, channels[-1], out_channels, 3)
        init_xavier(self)
        if spectral_norm:
            apply_spectral_norm(self)

    def check_input_size(self, shape: Sequence[int]) -> None:
        """Raise ConfigError unless `shape` is (B, latent_dim) or (latent_dim,)."""
        check_latent_shape(shape, self.latent_dim, "resgen generator")

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Synthesize images from latents `z` [B, latent_dim] (and class labels when num_classes > 0)."""
        self.check_input_size(z.shape)
        check_labels(labels, self.num_classes, "resgen generator")
        x = self.fc(z).view(z.shape[0], self.base_channels, *self.base_shape)
        for block in self.blocks:
            x = block(x, labels)
        return self.out_activation(self.out_conv(F.relu(self.out_norm(x))))
