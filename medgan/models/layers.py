"""Layers shared by medgan's generators and discriminators, for 2D and 3D alike (`spatial_dims`).

Conventions that every layer here keeps, because the trainer relies on them:

* Small fp32 tensors (biases, styles, demodulation factors) are cast to the activations' dtype before they meet
  activations, so a bf16 autocast forward stays in bf16 instead of silently promoting to fp32 (twice the memory
  traffic and a cast kernel before every convolution).
* Statistics (demodulation, minibatch standard deviation, latent normalisation) are computed in fp32.
* Parameters are created with torch's RNG only, so a seeded build is bit-for-bit repeatable.
* Parameters have the rank of the convolutions they feed (`[1, C, *spatial]` for learned images), so
  `model.to(memory_format=torch.channels_last_3d)` converts every one of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from medgan.models.shapes import check_choice

LRELU_SLOPE = 0.2
# Leaky-ReLU followed by this gain keeps the activations' second moment near 1 (StyleGAN's `bias_act` gain).
LRELU_GAIN = math.sqrt(2.0)

NORMS = ("batch", "instance", "none")
OUT_ACTIVATIONS = {"tanh": (-1.0, 1.0), "linear": None}


def conv_fn(spatial_dims: int):
    """`F.conv2d` or `F.conv3d`."""
    return F.conv2d if spatial_dims == 2 else F.conv3d


def interp_mode(spatial_dims: int) -> str:
    """The linear interpolation mode for `spatial_dims` ("bilinear" or "trilinear")."""
    return "bilinear" if spatial_dims == 2 else "trilinear"


def norm_layer(norm: str | None, spatial_dims: int, channels: int, affine: bool = True) -> nn.Module:
    """A MONAI-factory batch or instance norm, or `nn.Identity` for "none"/None.

    Instance norm never tracks running statistics, so it behaves the same in training and evaluation.
    """
    norm = "none" if norm is None else norm
    check_choice("norm", norm, NORMS)
    if norm == "none":
        return nn.Identity()
    if norm == "batch":
        return Norm[Norm.BATCH, spatial_dims](channels, affine=affine)
    return Norm[Norm.INSTANCE, spatial_dims](channels, affine=affine, track_running_stats=False)


def output_activation(name: str) -> tuple[nn.Module, tuple[float, float] | None]:
    """The final activation of a generator and the range it guarantees (None: unbounded)."""
    check_choice("out_activation", name, tuple(OUT_ACTIVATIONS))
    return (nn.Tanh() if name == "tanh" else nn.Identity()), OUT_ACTIVATIONS[name]


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (slope 0.2) with the variance-preserving gain sqrt(2)."""
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


def channel_view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample or per-channel values `t` ([C] or [B, C]) shaped to broadcast over `like`, in its dtype."""
    shape = (-1, like.shape[1]) if t.dim() == 2 else (1, -1)
    return t.to(like.dtype).view(*shape, *([1] * (like.dim() - 2)))


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Integer labels [B, *spatial] -> one-hot [B, num_classes, *spatial].

    Written as a comparison with `arange` rather than `F.one_hot`: no range check means no host-device sync on
    GPU and one fused kernel under torch.compile. A label outside [0, num_classes) gives an all-zero vector, so
    datasets must validate label maps.
    """
    classes = torch.arange(num_classes, device=labels.device).view(1, -1, *([1] * (labels.dim() - 1)))
    return (labels.unsqueeze(1) == classes).to(dtype)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit mean square (StyleGAN's latent normalisation), in fp32."""
    x = x.float()
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class EqualizedLinear(nn.Module):
    """Linear layer with an equalized learning rate (weights stored N(0, 1), scaled by 1/sqrt(fan_in) at run time).

    With Adam this gives every layer the same effective learning rate whatever its fan-in (Karras et al. 2018).
    `lr_multiplier` slows a layer down (StyleGAN's mapping network uses 0.01). With `equalized=False` the weight
    is stored already scaled; use that when spectral norm rescales the weight anyway.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,  # initial value of every bias entry
        lr_multiplier: float = 1.0,
        equalized: bool = True,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        scale = 1.0 / lr_multiplier if equalized else 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * scale)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features) if equalized else 1.0
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.weight_gain if self.weight_gain != 1.0 else self.weight
        bias = None if self.bias is None else (self.bias * self.bias_gain if self.bias_gain != 1.0 else self.bias)
        return F.linear(x, weight, bias)

    def macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        return output.numel() * self.in_features


class EqualizedConv(nn.Module):
    """Stride-1, same-padded convolution with an equalized learning rate (see `EqualizedLinear`)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        bias: bool = True,
        equalized: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.kernel_size, self.padding = in_channels, kernel_size, kernel_size // 2
        fan_in = in_channels * kernel_size**spatial_dims
        scale = 1.0 if equalized else 1.0 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *([kernel_size] * spatial_dims)) * scale)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(fan_in) if equalized else 1.0
        self._conv = conv_fn(spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.weight_gain if self.weight_gain != 1.0 else self.weight
        return self._conv(x, weight, self.bias, padding=self.padding)

    def macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        return output.numel() * self.in_channels * self.kernel_size ** (output.dim() - 2)


class ModulatedConv(nn.Module):
    """StyleGAN2's style-modulated convolution with optional weight demodulation, in 2D or 3D.

    `styles = affine(w)` scales the input channels of the shared weight per sample; demodulation rescales each
    output channel so that its expected second moment is 1. Two equivalent implementations:

    * `fused=False` (default, for training): scale the activations by the styles, run one ordinary dense
      convolution for the whole batch, scale the output by the demodulation factors. This is what StyleGAN2-ADA
      trains with: it is one cuDNN convolution that channels-last and bf16 handle at full speed.
    * `fused=True`: fold styles and demodulation into a per-sample weight and run one grouped convolution
      (groups = batch size), the "grouped-conv trick". Faster for small batches at inference; cuDNN's 3D grouped
      kernels are slow, which is why it is not the default.

    Neither loops over samples. Demodulation factors are computed in fp32 from [B, out, in] sums, never by
    materialising the [B, out, in, *k] per-sample weight (except in the fused path, which needs it).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        fused: bool = False,
    ) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.kernel_size, self.padding = kernel_size, kernel_size // 2
        self.demodulate, self.fused = demodulate, fused
        # Styles start at 1 so that at initialisation the layer is a plain (demodulated) convolution.
        self.affine = EqualizedLinear(style_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *([kernel_size] * spatial_dims)))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**spatial_dims)
        self._conv = conv_fn(spatial_dims)

    def _demod(self, styles: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # sum_{in,k} (w[o,i,k] s[b,i])^2 = sum_i s[b,i]^2 * sum_k w[o,i,k]^2, evaluated as a broadcasted product
        # (elementwise ops are not autocast, so this stays in fp32 under bf16 autocast).
        wsq = weight.float().square().flatten(2).sum(2)  # [out, in]
        return ((styles.float().square()[:, None, :] * wsq[None]).sum(2) + 1e-8).rsqrt()  # [B, out]

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # [B, in]
        weight = self.weight * self.weight_gain
        if self.fused:
            return self._forward_grouped(x, styles, weight)
        x = x * channel_view(styles, x)
        x = self._conv(x, weight.to(x.dtype), padding=self.padding)
        if self.demodulate:
            x = x * channel_view(self._demod(styles, weight), x)
        return x

    def _forward_grouped(self, x: torch.Tensor, styles: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        batch, spatial = x.shape[0], x.shape[2:]
        ones = [1] * self.spatial_dims
        w = weight[None].float() * styles.float().view(batch, 1, -1, *ones)  # [B, out, in, *k]
        if self.demodulate:
            w = w * self._demod(styles, weight).view(batch, -1, 1, *ones)
        w = w.reshape(batch * self.out_channels, self.in_channels, *weight.shape[2:]).to(x.dtype)
        x = x.reshape(1, batch * self.in_channels, *spatial)
        y = self._conv(x, w, padding=self.padding, groups=batch)
        return y.reshape(batch, self.out_channels, *y.shape[2:])

    def macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        return output.numel() * self.in_channels * self.kernel_size**self.spatial_dims


class MinibatchStd(nn.Module):
    """Appends the standard deviation across groups of samples as extra channels (Karras et al. 2018).

    It lets the discriminator see a batch's diversity, the classic remedy for mode collapse. The group size is
    the largest divisor of the batch not above `group_size`, so a short last batch never fails.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, spatial = x.shape[0], x.shape[1], x.shape[2:]
        groups = self.group_size
        while batch % groups:  # the largest divisor of the batch not above group_size (traceable, unlike gcd)
            groups -= 1
        nc = self.num_channels
        y = x.float().reshape(groups, -1, nc, channels // nc, *spatial)  # [G, M, F, c, *spatial]
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # variance over each group
        y = (y + 1e-8).sqrt().flatten(2).mean(dim=2)  # [M, F]
        y = y.reshape(-1, nc, *([1] * len(spatial))).repeat(groups, 1, *spatial)
        return torch.cat([x, y.to(x.dtype)], dim=1)


def conv_layer(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    bias: bool = True,
    padding_mode: str = "zeros",
) -> nn.Module:
    """A MONAI-factory convolution padded to keep the size (or divide it exactly by `stride`)."""
    return Conv[Conv.CONV, spatial_dims](
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        bias=bias,
        padding_mode=padding_mode,
    )


_SPECTRAL_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding, EqualizedLinear, EqualizedConv, ModulatedConv)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral-normalise the `weight` of every convolution, linear and embedding layer in `module`, in place.

    Uses torch's parametrization API, which torch.compile and DDP support and whose state_dict is stable.
    """
    for sub in list(module.modules()):
        if isinstance(sub, _SPECTRAL_TYPES) and isinstance(getattr(sub, "weight", None), nn.Parameter):
            _spectral_norm(sub)
    return module


def init_xavier(module: nn.Module) -> nn.Module:
    """Xavier-uniform weights and zero biases for every plain convolution and linear layer (BigGAN's init)."""
    for sub in module.modules():
        if isinstance(sub, nn.modules.conv._ConvNd | nn.Linear):
            nn.init.xavier_uniform_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
    return module


def spatial_tuple(value: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """An int or a sequence -> a tuple of `spatial_dims` ints."""
    return (int(value),) * spatial_dims if isinstance(value, int) else tuple(int(v) for v in value)
