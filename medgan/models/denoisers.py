"""A full-resolution residual denoiser (DnCNN, Zhang et al. 2017), 2D or 3D.

Encoder-decoder generators such as the pix2pix U-Net see the image first at half resolution, so a
correction at the scale of one voxel (CT quantum noise, MR thermal noise) is out of their reach.
DnCNN keeps every layer at full resolution: a stem of convolution and ReLU, `depth - 2` blocks of
convolution, norm and ReLU, and a last convolution that predicts the noise, which is subtracted
from the input. Any size of input fits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medgan.errors import ConfigError
from medgan.models.layers import conv_layer, norm_layer, output_activation
from medgan.models.registries import GENERATORS
from medgan.models.shapes import check_int, check_spatial_dims, split_input_shape

__all__ = ["DnCNN"]


@GENERATORS.register("dncnn")
class DnCNN(nn.Module):
    """Residual denoiser: output = input - predicted noise, every layer at the input's own resolution."""

    kind = "image"
    any_size = True  # no stride: every spatial size fits

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 1,  # input image channels (a 2.5D slab's slices, or an image and its mask)
        out_channels: int = 1,  # output channels: the input's first out_channels, corrected
        channels: int = 64,  # feature channels of every hidden layer
        depth: int = 17,  # convolution layers in all (DnCNN-S: 17)
        norm: str = "batch",  # "batch", "instance" or "none"
        out_activation: str = "tanh",  # "tanh": the result clamped to [-1, 1]; "linear": unbounded
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_int("in_channels", in_channels)
        self.out_channels = check_int("out_channels", out_channels)
        check_int("channels", channels)
        if check_int("depth", depth) < 2:
            raise ConfigError(f"dncnn generator: depth {depth} must be at least 2 (a stem and a head)")
        if in_channels < out_channels:
            raise ConfigError(f"dncnn generator: it subtracts its prediction from the input, so in_channels "
                              f"({in_channels}) must be at least out_channels ({out_channels})")  # fmt: skip
        _, self.output_range = output_activation(out_activation)
        layers: list[nn.Module] = [conv_layer(spatial_dims, in_channels, channels), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [
                conv_layer(spatial_dims, channels, channels, bias=norm == "none"),
                norm_layer(norm, spatial_dims, channels),
                nn.ReLU(inplace=True),
            ]
        layers.append(conv_layer(spatial_dims, channels, out_channels))
        self.body = nn.Sequential(*layers)
        with torch.no_grad():  # it starts near the identity: little noise predicted yet
            layers[-1].weight.mul_(0.01)
            layers[-1].bias.zero_()

    def check_input_size(self, shape: Sequence[int]) -> None:
        """Raise ConfigError unless `shape` ((B, C, *spatial) or spatial) has the input channels; any size fits."""
        split_input_shape(shape, self.spatial_dims, self.in_channels, "dncnn generator")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise images [B, in_channels, *spatial] to [B, out_channels, *spatial]."""
        self.check_input_size(x.shape)
        y = x[:, : self.out_channels] - self.body(x)
        return y.clamp(*self.output_range) if self.output_range is not None else y
