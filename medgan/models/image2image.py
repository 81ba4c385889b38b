"""Image-to-image generators: the pix2pix U-Net (`GENERATORS["unet"]`) and the CycleGAN ResNet
(`GENERATORS["resnet"]`), in 2D and 3D. Both map [B, in_channels, *spatial] to [B, out_channels, *spatial].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv
from monai.networks.utils import normal_init
from torch import nn

from medgan.errors import ConfigError
from medgan.models.layers import LRELU_SLOPE, conv_layer, norm_layer, output_activation
from medgan.models.registries import GENERATORS
from medgan.models.shapes import check_choice, check_int, check_multiple, check_spatial_dims, split_input_shape

# pix2pix puts dropout, its only noise source, on the decoder levels nearest the bottleneck.
_DROPOUT_LEVELS = 3


def _monai_norm(norm: str) -> str | None:
    check_choice("norm", norm, ("batch", "instance", "none"))
    return None if norm == "none" else ("instance", {"affine": True}) if norm == "instance" else "batch"


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)


@GENERATORS.register("unet")
class UNetGenerator(nn.Module):
    """pix2pix U-Net (Isola et al. 2017) built from MONAI `Convolution` blocks, 2D or 3D.

    Each of `depth` encoder levels is a 4-wide stride-2 convolution, batch norm and leaky ReLU; each decoder level a
    4-wide stride-2 transposed convolution, norm (dropout near the bottleneck) and ReLU, concatenated with the
    encoder features of the same resolution. Every spatial axis must be a multiple of 2**depth; the default depth 5
    takes 256x256 slices and 96^3 (or 128^3) patches alike.
    """

    kind = "image"

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 1,  # input image channels
        out_channels: int = 1,  # output image channels
        channels: int = 64,  # channels at the first (half-resolution) level; doubles per level
        max_channels: int = 512,  # channel cap at the deep levels
        depth: int = 5,  # number of stride-2 levels; inputs must be multiples of 2**depth
        norm: str = "batch",  # "batch", "instance" or "none"
        dropout: float = 0.0,  # dropout probability in the 3 decoder levels nearest the bottleneck (pix2pix: 0.5)
        out_activation: str = "tanh",  # "tanh": output in [-1, 1]; "linear": unbounded
        residual: bool = False,  # add the input's first out_channels channels to the output: it learns a correction
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_int("in_channels", in_channels)
        self.out_channels = check_int("out_channels", out_channels)
        self.depth = check_int("depth", depth)
        self.residual = bool(residual)
        if self.residual and in_channels < out_channels:
            raise ConfigError(f"unet generator: residual adds the input to the output, so in_channels ({in_channels}) "
                              f"must be at least out_channels ({out_channels})")  # fmt: skip
        check_int("channels", channels)
        check_int("max_channels", max_channels)
        monai_norm = _monai_norm(norm)
        dropout = _check_dropout(dropout)
        self.out_activation, self.output_range = output_activation(out_activation)

        chans = [min(channels << level, max_channels) for level in range(depth)]
        common = {"spatial_dims": spatial_dims, "kernel_size": 4, "strides": 2, "padding": 1}
        self.down = nn.ModuleList()
        for level, ch in enumerate(chans):
            level_norm = None if level == 0 else monai_norm  # pix2pix: no norm on the first layer
            self.down.append(
                Convolution(
                    in_channels=in_channels if level == 0 else chans[level - 1],
                    out_channels=ch,
                    act=("leakyrelu", {"negative_slope": LRELU_SLOPE, "inplace": True}),
                    norm=level_norm,
                    bias=level_norm is None,  # a bias before a norm would have zero gradient
                    adn_ordering="NA",
                    **common,
                )
            )
        self.up = nn.ModuleList()
        for level in reversed(range(1, depth)):
            self.up.append(
                Convolution(
                    in_channels=chans[level] * (1 if level == depth - 1 else 2),
                    out_channels=chans[level - 1],
                    act=("relu", {"inplace": True}),
                    norm=monai_norm,
                    bias=monai_norm is None,
                    dropout=dropout if dropout > 0 and depth - 1 - level < _DROPOUT_LEVELS else None,
                    is_transposed=True,
                    output_padding=0,
                    adn_ordering="NDA",
                    **common,
                )
            )
        self.final = Convolution(
            in_channels=chans[0] * (2 if depth > 1 else 1),
            out_channels=out_channels,
            conv_only=True,
            is_transposed=True,
            output_padding=0,
            **common,
        )
        self.apply(normal_init)  # N(0, 0.02) weights, BN scale N(1, 0.02), as pix2pix

    def check_input_size(self, shape: Sequence[int]) -> None:
        """Raise ConfigError unless `shape` ((B, C, *spatial) or spatial) fits: axes multiples of 2**depth."""
        spatial = split_input_shape(shape, self.spatial_dims, self.in_channels, "unet generator")
        check_multiple(spatial, 2**self.depth, "unet generator", f"depth={self.depth} halves it {self.depth} times")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate images [B, in_channels, *spatial] to [B, out_channels, *spatial]."""
        self.check_input_size(x.shape)
        skips = []
        source = x
        for down in self.down:
            x = down(x)
            skips.append(x)
        x = skips.pop()
        for up in self.up:
            x = torch.cat([up(x), skips.pop()], dim=1)
        if not self.residual:
            return self.out_activation(self.final(x))
        # The input (its first out_channels channels) plus a correction; tanh's range kept by clamping, so that
        # where no correction is needed the output is the input itself.
        y = source[:, : self.out_channels] + self.final(x)
        return y.clamp(*self.output_range) if self.output_range is not None else y


class ResidualBlock(nn.Module):
    """conv3-norm-ReLU-(dropout)-conv3-norm plus identity, at constant resolution (CycleGAN's ResnetBlock)."""

    def __init__(self, spatial_dims: int, channels: int, norm: str, padding_mode: str, dropout: float) -> None:
        super().__init__()
        bias = norm == "none"
        layers = [
            conv_layer(spatial_dims, channels, channels, 3, bias=bias, padding_mode=padding_mode),
            norm_layer(norm, spatial_dims, channels),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [
            conv_layer(spatial_dims, channels, channels, 3, bias=bias, padding_mode=padding_mode),
            norm_layer(norm, spatial_dims, channels),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@GENERATORS.register("resnet")
class ResNetGenerator(nn.Module):
    """CycleGAN ResNet generator (Zhu et al. 2017; Johnson et al. 2016), 2D or 3D.

    7-wide stem, `num_downsamples` stride-2 convolutions, `num_blocks` residual blocks at the lowest resolution,
    as many stride-2 transposed convolutions, 7-wide head. Axes must be multiples of 2**num_downsamples.
    """

    kind = "image"

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 1,  # input image channels
        out_channels: int = 1,  # output image channels
        channels: int = 64,  # channels of the stem; doubles per downsampling
        num_downsamples: int = 2,  # stride-2 levels; inputs must be multiples of 2**num_downsamples
        num_blocks: int = 9,  # residual blocks (CycleGAN: 9 at 256x256, 6 at 128x128)
        norm: str = "instance",  # "instance" (CycleGAN), "batch" (faster on GPU) or "none"
        padding_mode: str = "reflect",  # "reflect" (CycleGAN, fewer border artefacts) or "zeros" (faster)
        dropout: float = 0.0,  # dropout probability inside each residual block
        out_activation: str = "tanh",  # "tanh": output in [-1, 1]; "linear": unbounded
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_int("in_channels", in_channels)
        self.out_channels = check_int("out_channels", out_channels)
        self.num_downsamples = check_int("num_downsamples", num_downsamples, minimum=0)
        check_int("channels", channels)
        check_int("num_blocks", num_blocks, minimum=0)
        check_choice("norm", norm, ("batch", "instance", "none"))
        check_choice("padding_mode", padding_mode, ("reflect", "zeros"))
        self.padding_mode = padding_mode
        dropout = _check_dropout(dropout)
        self.out_activation, self.output_range = output_activation(out_activation)

        bias = norm == "none"
        ch = channels
        layers: list[nn.Module] = [
            conv_layer(spatial_dims, in_channels, ch, 7, bias=bias, padding_mode=padding_mode),
            norm_layer(norm, spatial_dims, ch),
            nn.ReLU(inplace=True),
        ]
        for _ in range(num_downsamples):
            layers += [
                conv_layer(spatial_dims, ch, ch * 2, 3, stride=2, bias=bias, padding_mode=padding_mode),
                norm_layer(norm, spatial_dims, ch * 2),
                nn.ReLU(inplace=True),
            ]
            ch *= 2
        layers += [ResidualBlock(spatial_dims, ch, norm, padding_mode, dropout) for _ in range(num_blocks)]
        transposed = Conv[Conv.CONVTRANS, spatial_dims]
        for _ in range(num_downsamples):
            layers += [
                transposed(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                norm_layer(norm, spatial_dims, ch // 2),
                nn.ReLU(inplace=True),
            ]
            ch //= 2
        layers.append(conv_layer(spatial_dims, ch, out_channels, 7, padding_mode=padding_mode))
        self.net = nn.Sequential(*layers)
        self.apply(normal_init)  # N(0, 0.02) weights, as CycleGAN

    def check_input_size(self, shape: Sequence[int]) -> None:
        """Raise ConfigError unless `shape` fits: axes multiples of 2**num_downsamples, large enough to reflect."""
        spatial = split_input_shape(shape, self.spatial_dims, self.in_channels, "resnet generator")
        n = self.num_downsamples
        # Reflection padding needs every axis longer than the pad: 3 for the 7-wide stem, 1 at the lowest level.
        minimum = max(4, 2 ** (n + 1)) if self.padding_mode == "reflect" else 1
        check_multiple(spatial, 2**n, "resnet generator", f"num_downsamples={n}", minimum=minimum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate images [B, in_channels, *spatial] to [B, out_channels, *spatial]."""
        self.check_input_size(x.shape)
        return self.out_activation(self.net(x))
