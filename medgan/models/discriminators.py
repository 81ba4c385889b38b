"""Discriminators, in 2D and 3D: a residual one for the latent generators (`DISCRIMINATORS["resnet"]`) and
MONAI's PatchGAN and multi-scale PatchGAN for image-to-image and label-map tasks.

`resnet`: `forward(x, labels=None) -> logits [B]`; with `reconstruction_head`, `forward(x, labels,
reconstruct=True) -> (logits, reconstruction)` (a self-supervised decoder, see `ReconstructionHead`).
`patchgan`, `multiscale_patchgan`: `forward(x, labels=None) -> list of logit maps` (one per scale) and
`forward_features(x) -> (logits, features)`, features[scale][layer] being the intermediate activations, for
feature-matching losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import MultiScalePatchDiscriminator, PatchDiscriminator
from torch import nn

from medgan.errors import ConfigError
from medgan.models.layers import EqualizedConv, EqualizedLinear, MinibatchStd, apply_spectral_norm, lrelu
from medgan.models.registries import DISCRIMINATORS
from medgan.models.shapes import (
    LATENT_CHANNELS,
    check_choice,
    check_equal,
    check_int,
    check_labels,
    check_spatial_dims,
    level_channels,
    pyramid_plan,
    resolve_image_size,
    split_input_shape,
)


class DownBlock(nn.Module):
    """StyleGAN2's residual discriminator block: two 3x3 convolutions and an average-pool, plus a pooled 1x1 skip.

    Pooling before the second convolution (rather than after) does that convolution at a quarter (2D) or an eighth
    (3D) of the cost; the sum is scaled by sqrt(1/2) to keep the variance.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, equalized: bool) -> None:
        super().__init__()
        self.conv0 = EqualizedConv(spatial_dims, in_channels, in_channels, 3, equalized=equalized)
        self.conv1 = EqualizedConv(spatial_dims, in_channels, out_channels, 3, equalized=equalized)
        self.skip = EqualizedConv(spatial_dims, in_channels, out_channels, 1, bias=False, equalized=equalized)
        self.pool = F.avg_pool2d if spatial_dims == 2 else F.avg_pool3d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(self.pool(x, 2))
        x = lrelu(self.conv0(x))
        x = lrelu(self.conv1(self.pool(x, 2)))
        return (x + skip) * math.sqrt(0.5)


class ReconstructionHead(nn.Module):
    """A small decoder from the discriminator's features one level above its base (8x8 for square images) back to
    an image `2**levels` times that size, trained to reproduce the real input (FastGAN's self-supervised
    discriminator, Liu et al. 2021, "Towards Faster and Stabilized GAN Training for High-fidelity Few-shot Image
    Synthesis"). A discriminator that must keep enough of a real image to redraw it cannot get by on the few
    features that tell a small training set's images apart, so it overfits later.

    Each level is a nearest-neighbour x2 upsampling and a 3x3 convolution, halving the channels; a linear 3x3
    convolution gives the image. `target(x)` is the input average-pooled to the decoder's output size.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, levels: int, equalized: bool) -> None:
        super().__init__()
        widths = [max(in_channels >> i, 8) for i in range(levels + 1)]
        self.convs = nn.ModuleList(
            EqualizedConv(spatial_dims, widths[i], widths[i + 1], 3, equalized=equalized) for i in range(levels)
        )
        self.to_image = EqualizedConv(spatial_dims, widths[-1], out_channels, 3, equalized=equalized)
        self.factor = 2**levels

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features
        for conv in self.convs:
            x = lrelu(conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))
        return self.to_image(x)

    def target(self, images: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """`images` average-pooled to the spatial size of the reconstruction `like`."""
        pool = F.adaptive_avg_pool2d if images.dim() == 4 else F.adaptive_avg_pool3d
        return pool(images, like.shape[2:])


@DISCRIMINATORS.register("resnet")
class ResNetDiscriminator(nn.Module):
    """Residual discriminator matching the latent generators (StyleGAN2's "resnet" D), 2D or 3D.

    Pools `image_size` down to a 4-voxel-per-axis base, appends the minibatch standard deviation, and ends in two
    linear layers. With `num_classes` > 0 it adds the projection term <embed(label), features> (Miyato & Koyama
    2018). Layers use an equalized learning rate, or spectral norm instead when `spectral_norm=True`.

    With `reconstruction_head=True` a decoder redraws the (augmented) real input from the features one level
    above the base; the objectives add `loss.d_reconstruction_weight` times its L1 error to the discriminator's
    loss on real images (`ReconstructionHead`). `reconstruction_levels` x2 steps: 2 gives 32x32 from a 64x64
    input.
    """

    kind = "latent"

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 1,  # image channels
        image_size: int | Sequence[int] | None = None,  # voxels per axis; None: 256x256 (2D) or 128^3 (3D)
        num_classes: int = 0,  # 0: unconditional; >0: projection conditioning
        base_channels: int | None = None,  # channels at full resolution; None: 64 (2D) / 32 (3D)
        max_channels: int | None = None,  # channel cap at low resolution; None: 512 (2D) / 256 (3D)
        mbstd_group_size: int = 4,  # samples per minibatch-stddev group; 0 turns the layer off
        mbstd_channels: int = 1,  # feature groups of the minibatch stddev (extra channels it appends)
        spectral_norm: bool = False,  # spectral norm on every conv/linear/embedding instead of equalized lr
        reconstruction_head: bool = False,  # a self-supervised decoder of real inputs (FastGAN), see the class
        reconstruction_levels: int = 2,  # its x2 steps up from the features one level above the base
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.image_size = resolve_image_size(image_size, spatial_dims)
        base_shape, steps = pyramid_plan(self.image_size, "resnet discriminator")
        check_int("reconstruction_levels", reconstruction_levels)
        if reconstruction_head and (steps < 2 or reconstruction_levels > steps - 1):
            raise ConfigError(
                f"resnet discriminator: a reconstruction head needs image_size {tuple(self.image_size)} at least "
                f"16 per axis and reconstruction_levels ({reconstruction_levels}) at most {max(steps - 1, 1)}, so "
                "that it decodes to at most the input size"
            )
        default_base, default_max = LATENT_CHANNELS[spatial_dims]
        base_channels = check_int("base_channels", default_base if base_channels is None else base_channels)
        max_channels = check_int("max_channels", default_max if max_channels is None else max_channels)
        self.in_channels = check_int("in_channels", in_channels)
        self.num_classes = check_int("num_classes", num_classes, minimum=0)
        check_int("mbstd_group_size", mbstd_group_size, minimum=0)
        check_int("mbstd_channels", mbstd_channels)

        channels = level_channels(steps, base_channels, max_channels)
        c0, eq = channels[0], not spectral_norm
        if mbstd_group_size > 0 and c0 % mbstd_channels:
            raise ConfigError(f"mbstd_channels={mbstd_channels} must divide the base channels {c0}")
        self.from_image = EqualizedConv(spatial_dims, in_channels, channels[-1], 1, equalized=eq)
        self.blocks = nn.ModuleList(
            DownBlock(spatial_dims, channels[level], channels[level - 1], eq) for level in range(steps, 0, -1)
        )
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_channels) if mbstd_group_size > 0 else None
        extra = mbstd_channels if self.mbstd is not None else 0
        self.conv = EqualizedConv(spatial_dims, c0 + extra, c0, 3, equalized=eq)
        self.fc = EqualizedLinear(c0 * math.prod(base_shape), c0, equalized=eq)
        self.out = EqualizedLinear(c0, 1, equalized=eq)
        self.embed = nn.Embedding(num_classes, c0) if num_classes > 0 else None
        self.projection_gain = 1.0 / math.sqrt(c0)  # keeps the projection term O(1) whatever the width
        self.reconstruction = (
            ReconstructionHead(spatial_dims, channels[1], in_channels, reconstruction_levels, eq)
            if reconstruction_head else None
        )  # fmt: skip
        if spectral_norm:
            apply_spectral_norm(self)

    def check_input_size(self, shape: Sequence[int]) -> None:
        """Raise ConfigError unless `shape` ((B, C, *spatial) or spatial) is `image_size` with `in_channels`."""
        spatial = split_input_shape(shape, self.spatial_dims, self.in_channels, "resnet discriminator")
        check_equal(spatial, self.image_size, "resnet discriminator")

    @property
    def reconstructs(self) -> bool:
        return self.reconstruction is not None

    def reconstruction_error(self, images: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """Mean L1 between the head's `decoded` images and the `images` it saw, pooled to its size, in fp32."""
        return F.l1_loss(decoded.float(), self.reconstruction.target(images.float(), decoded))

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, reconstruct: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Real/fake logits [B] for images [B, in_channels, *image_size] (and labels when class-conditional);
        with `reconstruct` (a reconstruction head is needed), (logits, the head's reconstruction of x)."""
        self.check_input_size(x.shape)
        check_labels(labels, self.num_classes, "resnet discriminator")
        if reconstruct and self.reconstruction is None:
            raise ConfigError("resnet discriminator: reconstruct=True needs reconstruction_head=True")
        x = lrelu(self.from_image(x))
        decoded = None
        for index, block in enumerate(self.blocks):
            x = block(x)
            if reconstruct and index == len(self.blocks) - 2:
                decoded = self.reconstruction(x)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = lrelu(self.conv(x))
        h = lrelu(self.fc(x.flatten(1)))
        out = self.out(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(labels).to(h.dtype) * h).sum(dim=1) * self.projection_gain
        return (out, decoded) if reconstruct else out


def _patch_norm(norm: str) -> str | tuple | None:
    check_choice("norm", norm, ("batch", "instance", "none"))
    return None if norm == "none" else ("instance", {"affine": True}) if norm == "instance" else "batch"


def _patch_output_size(size: int, num_layers: int, kernel_size: int, last_kernel_size: int) -> int:
    """Output length of MONAI's PatchDiscriminator along one axis, or 0 if some layer gets too short an input."""
    pad = (kernel_size - 1) // 2
    strides = [2] + [2] * (num_layers - 1) + [1]
    for stride in strides:
        size = (size + 2 * pad - kernel_size) // stride + 1
        if size < 1:
            return 0
    last_pad = (last_kernel_size - 1) // 2
    return max(size + 2 * last_pad - last_kernel_size + 1, 0)


class _PatchBase(nn.Module):
    """Shared contract of the MONAI PatchGAN wrappers: logits only from `forward`, features on request."""

    kind = "patch"
    name = "patchgan discriminator"

    def _setup(
        self, spatial_dims: int, in_channels: int, num_layers: int, channels: int, kernel_size: int, dropout: float
    ) -> None:
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_int("in_channels", in_channels)
        self.num_layers = check_int("num_layers", num_layers)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=2)
        check_int("channels", channels)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")

    def check_input_size(self, shape: Sequence[int]) -> None:
        """Raise ConfigError unless every scale still has at least one output voxel per axis for `shape`."""
        spatial = split_input_shape(shape, self.spatial_dims, self.in_channels, self.name)
        deepest = max(self.depths)
        minimum = 1
        while _patch_output_size(minimum, deepest, self.kernel_size, self.last_kernel_size) < 1:
            minimum += 1
        if min(spatial) < minimum:
            raise ConfigError(
                f"{self.name} with {deepest} layers at its deepest scale cannot take spatial size {tuple(spatial)}: "
                f"every axis must be at least {minimum}; use larger inputs or fewer layers/scales"
            )

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Logit maps, one per scale ([B, 1, *patch_grid] each). PatchGANs are not class-conditional."""
        check_labels(labels, 0, self.name)
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """(logit maps per scale, intermediate activations per scale and layer) for feature-matching losses."""
        self.check_input_size(x.shape)
        if isinstance(self.net, MultiScalePatchDiscriminator):
            logits, features = self.net(x)
            return logits, features
        outputs = self.net(x)
        return [outputs[-1]], [outputs[:-1]]


@DISCRIMINATORS.register("patchgan")
class PatchGANDiscriminator(_PatchBase):
    """pix2pix's PatchGAN (70x70 receptive field at the defaults), MONAI's `PatchDiscriminator`, 2D or 3D.

    `forward(x) -> [logits [B, 1, *grid]]` (a one-element list, like the multi-scale one); 256x256 gives a 30x30
    grid. For pix2pix, feed the concatenation of input and output images (in_channels = both).
    """

    name = "patchgan discriminator"

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 1,  # image channels (input + output channels for a conditional pix2pix D)
        num_layers: int = 3,  # stride-2 layers after the first (3: pix2pix's 70x70 PatchGAN)
        channels: int = 64,  # channels of the first layer; doubles per layer
        kernel_size: int = 4,  # convolution width
        norm: str = "batch",  # "batch" (pix2pix), "instance" or "none" (usual with spectral_norm)
        dropout: float = 0.0,  # dropout probability after each layer
        spectral_norm: bool = False,  # spectral norm on every convolution
    ) -> None:
        super().__init__()
        self._setup(spatial_dims, in_channels, num_layers, channels, kernel_size, dropout)
        self.depths, self.last_kernel_size = [num_layers], kernel_size
        self.net = PatchDiscriminator(
            spatial_dims=spatial_dims,
            channels=channels,
            in_channels=in_channels,
            out_channels=1,
            num_layers_d=num_layers,
            kernel_size=kernel_size,
            norm=_patch_norm(norm),
            bias=norm == "none",  # a bias before a norm would have zero gradient
            padding=(kernel_size - 1) // 2,
            dropout=dropout,
        )
        if spectral_norm:
            apply_spectral_norm(self.net)


@DISCRIMINATORS.register("multiscale_patchgan")
class MultiScalePatchGANDiscriminator(_PatchBase):
    """MONAI's `MultiScalePatchDiscriminator`: `num_scales` PatchGANs, the i-th with num_layers * (i + 1) layers.

    MONAI realises the scales by depth (each deeper net sees coarser patches of the same input) and doubles the
    channels at every layer without a cap, so the deepest net has channels * 2**(num_layers * num_scales) channels:
    hence the default of 16 channels rather than 64 (with 64, two scales of three layers would have 4096 channels
    and ~180M parameters in 2D, ~700M in 3D).
    """

    name = "multiscale_patchgan discriminator"

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 1,  # image channels (input + output channels for a conditional D)
        num_layers: int = 3,  # stride-2 layers of the first scale; scale i has num_layers * (i + 1)
        channels: int = 16,  # channels of each net's first layer; doubles per layer
        num_scales: int = 2,  # number of PatchGANs
        kernel_size: int = 4,  # convolution width
        norm: str = "batch",  # "batch", "instance" or "none" (usual with spectral_norm)
        dropout: float = 0.0,  # dropout probability after each layer
        spectral_norm: bool = False,  # spectral norm on every convolution
    ) -> None:
        super().__init__()
        self._setup(spatial_dims, in_channels, num_layers, channels, kernel_size, dropout)
        self.num_scales = check_int("num_scales", num_scales)
        self.depths = [num_layers * (i + 1) for i in range(num_scales)]
        self.last_kernel_size = 1  # MONAI's multi-scale default
        self.net = MultiScalePatchDiscriminator(
            num_d=num_scales,
            num_layers_d=num_layers,
            spatial_dims=spatial_dims,
            channels=channels,
            in_channels=in_channels,
            out_channels=1,
            kernel_size=kernel_size,
            norm=_patch_norm(norm),
            bias=norm == "none",
            dropout=dropout,
            # Only feeds MONAI's constructor-time size assertion; check_input_size does the real check at forward.
            minimum_size_im=2 ** max(self.depths),
            last_conv_kernel_size=self.last_kernel_size,
        )
        if spectral_norm:
            apply_spectral_norm(self.net)
