"""StyleGAN2-style latent generator, `GENERATORS["stylegan"]`, in 2D and 3D.

z (and a class label) -> mapping MLP -> w -> per-layer styles of modulated convolutions that grow a learned
4-voxel-per-axis constant to `image_size`, with per-pixel noise inputs and skip-connected image outputs at every
resolution (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medgan.errors import ConfigError
from medgan.models.layers import (
    EqualizedLinear,
    ModulatedConv,
    channel_view,
    interp_mode,
    lrelu,
    normalize_2nd_moment,
    output_activation,
)
from medgan.models.registries import GENERATORS
from medgan.models.shapes import (
    LATENT_CHANNELS,
    check_int,
    check_labels,
    check_latent_shape,
    check_spatial_dims,
    level_channels,
    pyramid_plan,
    resolve_image_size,
)


class MappingNetwork(nn.Module):
    """z [B, latent_dim] (+ labels) -> w [B, style_dim]; tracks the running mean of w for truncation."""

    def __init__(
        self,
        latent_dim: int,
        style_dim: int,
        num_classes: int,
        num_layers: int,
        lr_multiplier: float,
        w_avg_beta: float,
    ) -> None:
        super().__init__()
        self.w_avg_beta = w_avg_beta
        self.embed = nn.Embedding(num_classes, style_dim) if num_classes > 0 else None
        in_features = latent_dim + (style_dim if num_classes > 0 else 0)
        self.layers = nn.ModuleList(
            EqualizedLinear(in_features if i == 0 else style_dim, style_dim, lr_multiplier=lr_multiplier)
            for i in range(num_layers)
        )
        self.register_buffer("w_avg", torch.zeros(style_dim))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None, update_w_avg: bool) -> torch.Tensor:
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed(labels))], dim=1)
        for layer in self.layers:
            x = lrelu(layer(x))
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution, optional per-pixel noise with a learned strength, bias and leaky ReLU."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, style_dim: int, use_noise: bool, fused: bool
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv(spatial_dims, in_channels, out_channels, 3, style_dim, fused=fused)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros(())) if use_noise else None

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, w)
        if self.noise_strength is not None:
            noise = torch.randn((x.shape[0], 1, *x.shape[2:]), device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength.to(x.dtype)
        return lrelu(x + channel_view(self.bias, x))


class SynthesisBlock(nn.Module):
    """One resolution: (upsample, conv0 |  learned constant), conv1, and a 1x1 modulated image output."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        image_channels: int,
        style_dim: int,
        use_noise: bool,
        fused: bool,
        base_shape: tuple[int, ...] | None,
    ) -> None:
        super().__init__()
        self.mode = interp_mode(spatial_dims)
        if base_shape is not None:  # the first block starts from a learned constant instead of an upsampling
            self.const = nn.Parameter(torch.randn(1, out_channels, *base_shape))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = SynthesisLayer(spatial_dims, in_channels, out_channels, style_dim, use_noise, fused)
        self.conv1 = SynthesisLayer(spatial_dims, out_channels, out_channels, style_dim, use_noise, fused)
        self.to_image = ModulatedConv(spatial_dims, out_channels, image_channels, 1, style_dim, False, fused)
        self.image_bias = nn.Parameter(torch.zeros(image_channels))
        self.num_ws = 2 if self.conv0 is None else 3

    def forward(
        self, x: torch.Tensor | None, image: torch.Tensor | None, ws: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.const is not None:
            x = self.const.expand(ws.shape[0], *self.const.shape[1:])
        else:
            x = F.interpolate(x, scale_factor=2.0, mode=self.mode, align_corners=False)
            x = self.conv0(x, ws[:, 0])
        x = self.conv1(x, ws[:, self.num_ws - 2])
        y = self.to_image(x, ws[:, self.num_ws - 1])
        y = y + channel_view(self.image_bias, y)
        if image is not None:
            y = y + F.interpolate(image, scale_factor=2.0, mode=self.mode, align_corners=False).to(y.dtype)
        return x, y


@GENERATORS.register("stylegan")
class StyleGANGenerator(nn.Module):
    """StyleGAN2 generator (skip architecture) for unconditional or class-conditional synthesis, 2D or 3D.

    `forward(z [B, latent_dim], labels LongTensor[B] | None) -> [B, out_channels, *image_size]`. The output is
    linear by default (`output_range` None), as in StyleGAN2, trained towards data in [-1, 1]: the image outputs of
    all resolutions are summed, and at initialisation that sum carries a random offset of about +-2 that a tanh
    would turn into a saturated, gradient-starved start. Clamp samples to the data range before writing.

    Every axis of `image_size` must be 4 * 2^n (non-square sizes such as 256x128 work). Channels double at every
    halving of the resolution from `base_channels` at full resolution, capped at `max_channels`.

    `truncation_psi` < 1 pulls every w toward `truncation_centre` (the mean w, or its class's): plainer, more
    typical samples, less variety. In training mode the generator also updates the running mean of w and applies
    style mixing regularisation; noise is drawn from torch's global RNG, so seed it for reproducible samples.
    """

    kind = "latent"

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        out_channels: int = 1,  # image channels (1 for CT/MR)
        image_size: int | Sequence[int] | None = None,  # voxels per axis; None: 256x256 (2D) or 128^3 (3D)
        latent_dim: int = 256,  # size of z
        num_classes: int = 0,  # 0: unconditional
        base_channels: int | None = None,  # channels at full resolution; None: 64 (2D) / 32 (3D)
        max_channels: int | None = None,  # channel cap at low resolution; None: 512 (2D) / 256 (3D)
        style_dim: int = 512,  # size of w
        mapping_layers: int = 8,  # depth of the z -> w MLP
        mapping_lr_multiplier: float = 0.01,  # learning-rate factor of the mapping MLP (StyleGAN's 0.01)
        use_noise: bool = True,  # per-pixel noise inputs
        style_mixing_prob: float = 0.9,  # probability per sample of mixing two w's in training (0: off)
        fused_modconv: bool = False,  # grouped-conv modulation (see ModulatedConv); False is faster to train
        w_avg_beta: float = 0.995,  # decay per training step of the tracked mean of w
        truncation_psi: float = 1.0,  # drawing (eval mode) uses this psi unless forward is given one; training 1
        out_activation: str = "linear",  # "linear" (StyleGAN2): unbounded, clamp to the data range; "tanh": [-1, 1]
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.image_size = resolve_image_size(image_size, spatial_dims)
        base_shape, steps = pyramid_plan(self.image_size, "stylegan generator")
        default_base, default_max = LATENT_CHANNELS[spatial_dims]
        base_channels = check_int("base_channels", default_base if base_channels is None else base_channels)
        max_channels = check_int("max_channels", default_max if max_channels is None else max_channels)
        self.out_channels = check_int("out_channels", out_channels)
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.num_classes = check_int("num_classes", num_classes, minimum=0)
        check_int("style_dim", style_dim)
        check_int("mapping_layers", mapping_layers)
        if not 0.0 <= style_mixing_prob <= 1.0:
            raise ConfigError(f"style_mixing_prob must be in [0, 1], got {style_mixing_prob!r}")
        self.style_mixing_prob = float(style_mixing_prob)
        if not 0.0 <= truncation_psi <= 1.0:
            raise ConfigError(f"truncation_psi must be in [0, 1] (1: none), got {truncation_psi!r}")
        self.truncation_psi = float(truncation_psi)
        self._centres: tuple[tuple, torch.Tensor] | None = None  # truncation_centre's class means, with their key
        self.out_activation, self.output_range = output_activation(out_activation)

        self.mapping = MappingNetwork(
            latent_dim, style_dim, num_classes, mapping_layers, mapping_lr_multiplier, w_avg_beta
        )
        channels = level_channels(steps, base_channels, max_channels)
        self.blocks = nn.ModuleList(
            SynthesisBlock(
                spatial_dims,
                channels[max(level - 1, 0)],
                channels[level],
                out_channels,
                style_dim,
                use_noise,
                fused_modconv,
                base_shape if level == 0 else None,
            )
            for level in range(steps + 1)
        )
        self.num_ws = sum(block.num_ws for block in self.blocks)

    def check_input_size(self, shape: Sequence[int]) -> None:
        """Raise ConfigError unless `shape` is (B, latent_dim) or (latent_dim,)."""
        check_latent_shape(shape, self.latent_dim, "stylegan generator")

    def forward(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation_psi: float | None = None
    ) -> torch.Tensor:
        """Synthesize images from latents `z` [B, latent_dim]; `truncation_psi` < 1 trades diversity for quality
        (None: the generator's own `truncation_psi` in eval mode, none in training mode)."""
        self.check_input_size(z.shape)
        check_labels(labels, self.num_classes, "stylegan generator")
        w = self.mapping(z, labels, update_w_avg=self.training)
        psi = truncation_psi if truncation_psi is not None else (1.0 if self.training else self.truncation_psi)
        if psi != 1.0:
            w = self.truncation_centre(labels).to(w.dtype).lerp(w, psi)
        ws = w.unsqueeze(1).expand(-1, self.num_ws, -1)
        if self.training and self.style_mixing_prob > 0:
            ws = self._mix_styles(ws, z, labels)
        x = image = None
        start = 0
        for block in self.blocks:
            x, image = block(x, image, ws[:, start : start + block.num_ws])
            start += block.num_ws
        return self.out_activation(image)

    @torch.no_grad()
    def truncation_centre(self, labels: torch.Tensor | None = None, samples: int = 4096) -> torch.Tensor:
        """The w that truncation pulls each sample toward: the mean of w tracked in training ([style_dim]) or, for
        a class-conditional generator, the mean w of each sample's class ([B, style_dim]), estimated from
        `samples` fixed latents per class, since the tracked mean mixes every class."""
        if labels is None or self.mapping.embed is None:
            return self.mapping.w_avg
        # Drawing calls this once per batch: the centres of all classes are kept until the mapping's weights change
        # (their version counters move with every optimizer or EMA step and every load; a copy has new storage),
        # not recomputed each time. Like w_avg they are constants: no graph is kept with them.
        key = (labels.device, samples, tuple((p.data_ptr(), p._version) for p in self.mapping.parameters()))
        if self._centres is None or self._centres[0] != key:
            z = torch.randn(samples, self.latent_dim, generator=torch.Generator().manual_seed(0)).to(labels.device)
            with torch.no_grad():
                centres = torch.stack([
                    self.mapping(z, z.new_full((samples,), c, dtype=torch.long), update_w_avg=False).float().mean(0)
                    for c in range(self.num_classes)
                ])  # fmt: skip
            self._centres = (key, centres)
        return self._centres[1][labels]

    def _mix_styles(self, ws: torch.Tensor, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        # Layers from a random cutoff on take the styles of a second latent, so that the network cannot assume
        # adjacent styles are correlated (StyleGAN's mixing regularisation). Tensor ops only: no Python branching
        # on random values, so torch.compile traces it as one graph.
        w2 = self.mapping(torch.randn_like(z), labels, update_w_avg=False).to(ws.dtype)
        batch = z.shape[0]
        cutoff = torch.randint(1, max(self.num_ws, 2), (batch, 1), device=z.device)
        mixed = torch.rand((batch, 1), device=z.device) < self.style_mixing_prob
        cutoff = torch.where(mixed, cutoff, self.num_ws)
        layer = torch.arange(self.num_ws, device=z.device)
        return torch.where((layer < cutoff).unsqueeze(-1), ws, w2.unsqueeze(1))
