"""Differentiable augmentation for small medical data sets: DiffAugment with ADA's adaptive p.

Everything the discriminator sees, real and fake alike, goes through the same random
pipeline, so the generator learns the un-augmented distribution while the discriminator
cannot memorise the few real scans (Zhao et al. 2020, DiffAugment; Karras et al. 2020, ADA).
Only operations that keep intensities meaningful are offered, in 2D and 3D:

- `flip`: mirror each spatial axis;  `rot90`: quarter turns, only in planes whose two axes have
  the same size and voxel spacing (elsewhere a turn would stretch anatomy);
- `translate`: integer voxel shifts of the same physical distance (mm) on every axis;
- `scale`: isotropic zoom in physical space about the centre;
- `cutout`: a box of the same physical size on every axis set to background;
- `intensity`: brightness shift and contrast change about each sample's mean. No colour ops.

Each op is applied to each sample with probability `p`. Randomness is explicit: `sample()`
draws a parameter record from the pipeline's own generator and `apply()` is a deterministic,
differentiable function of the image and the record. With `ada_target` set, `update_p()`
raises p when the discriminator grows too sure of real images (E[sign D(real)] above target)
and lowers it otherwise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medgan.errors import ConfigError

__all__ = ["OPS", "Augment", "apply", "rot90_planes"]

OPS = ("flip", "rot90", "translate", "scale", "cutout", "intensity")


def rot90_planes(size: Sequence[int], spacing_mm: Sequence[float]) -> list[tuple[int, int]]:
    """Spatial axis pairs where a quarter turn keeps shape and geometry (same size and spacing)."""
    return [
        (a, b)
        for a, b in itertools.combinations(range(len(size)), 2)
        if size[a] == size[b] and math.isclose(spacing_mm[a], spacing_mm[b], rel_tol=1e-3)
    ]


class Augment:
    """The augmentation pipeline and its ADA state (p, observations, random generator)."""

    def __init__(
        self,
        spatial_dims: int,
        ops: Sequence[str] = (),  # subset of OPS, applied in the order of OPS
        p: float = 0.0,  # probability of each op per sample (ADA's start value)
        spacing_mm: Sequence[float] | None = None,  # voxel size per spatial axis (mm); None: isotropic
        ada_target: float | None = None,  # target E[sign D(real)]; None keeps p fixed
        ada_speed_images: int = 500_000,  # images for p to move by 1
        translate_fraction: float = 0.125,  # max shift, fraction of the smallest field of view
        scale_log2_sd: float = 0.2,  # zoom factor 2**N(0, sd)
        cutout_fraction: float = 0.5,  # box side, fraction of the smallest field of view
        brightness_sd: float = 0.1,  # additive shift, normalized units
        contrast_log2_sd: float = 0.5,  # contrast factor 2**N(0, sd)
        background: float = -1.0,  # value of empty space in normalized images
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        unknown = [op for op in ops if op not in OPS]
        if unknown:
            raise ConfigError(f"unknown augmentation {unknown[0]!r} (valid: {', '.join(OPS)})")
        self.spatial_dims = spatial_dims
        self.ops = [op for op in OPS if op in ops]
        self.p = float(p)
        self.spacing_mm = list(spacing_mm) if spacing_mm is not None else [1.0] * spatial_dims
        self.ada_target = ada_target
        self.ada_speed_images = ada_speed_images
        self.settings = {
            "translate_fraction": translate_fraction, "scale_log2_sd": scale_log2_sd,
            "cutout_fraction": cutout_fraction, "brightness_sd": brightness_sd,
            "contrast_log2_sd": contrast_log2_sd, "background": background,
        }  # fmt: skip
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.device = torch.device(device)
        self._observed = torch.zeros(2, device=device, dtype=torch.float64)  # sum of sign means, count

    @property
    def active(self) -> bool:
        return bool(self.ops) and (self.p > 0 or self.ada_target is not None)

    def __call__(self, x: Tensor) -> Tensor:
        if not self.ops or self.p <= 0:
            return x
        return apply(x, self.sample(x.shape), self.settings["background"])

    def sample(self, shape: Sequence[int]) -> dict[str, Tensor]:
        """Draw the parameter record for a batch of `shape` [B, C, *spatial]."""
        batch, size = shape[0], list(shape[2:])
        g, dev, p, s = self.generator, self.device, self.p, self.settings

        def chosen(*extra: int) -> Tensor:  # which samples (and axes) an op applies to
            return torch.rand(batch, *extra, generator=g, device=dev) < p

        record: dict[str, Tensor] = {}
        fov_mm = min(n * d for n, d in zip(size, self.spacing_mm, strict=True))
        spacing = torch.tensor(self.spacing_mm, device=dev)
        if "flip" in self.ops:
            record["flip"] = chosen(self.spatial_dims)
        if "rot90" in self.ops:
            for a, b in rot90_planes(size, self.spacing_mm):
                turns = torch.randint(1, 4, (batch,), generator=g, device=dev)
                record[f"rot90_{a}{b}"] = torch.where(chosen(), turns, 0)
        if "translate" in self.ops:
            shift_mm = (
                (torch.rand(batch, self.spatial_dims, generator=g, device=dev) * 2 - 1)
                * s["translate_fraction"]
                * fov_mm
            )
            record["translate"] = torch.where(chosen(1), torch.round(shift_mm / spacing), 0).long()
        if "scale" in self.ops:
            factor = torch.exp2(torch.randn(batch, generator=g, device=dev) * s["scale_log2_sd"])
            record["scale"] = torch.where(chosen(), factor, 1.0)
        if "intensity" in self.ops:
            shift = torch.randn(batch, generator=g, device=dev) * s["brightness_sd"]
            record["brightness"] = torch.where(chosen(), shift, 0.0)
            factor = torch.exp2(torch.randn(batch, generator=g, device=dev) * s["contrast_log2_sd"])
            record["contrast"] = torch.where(chosen(), factor, 1.0)
        if "cutout" in self.ops:
            box = torch.clamp(torch.round(s["cutout_fraction"] * fov_mm / spacing), min=1).long()
            record["cutout_size"] = box.expand(batch, -1)
            record["cutout_center"] = (
                torch.rand(batch, self.spatial_dims, generator=g, device=dev) * torch.tensor(size, device=dev)
            ).long()
            record["cutout"] = chosen()
        return record

    def observe(self, real_sign_mean: Tensor) -> None:
        """Record E[sign D(real)] of one step (a device tensor; no synchronization); nothing without ADA."""
        if self.ada_target is None:
            return
        self._observed += torch.stack([real_sign_mean.detach().double(), torch.ones_like(self._observed[0])])

    def update_p(self, images: int, reduce_sum: Callable[[Tensor], Tensor] = lambda t: t) -> float | None:
        """ADA: move p by sign(r - target) * images / ada_speed_images; returns r, or None without ADA.

        `images` is how many images (all processes) were seen since the last update;
        `reduce_sum` sums the observations over processes so every rank keeps the same p.
        """
        if self.ada_target is None:
            return None
        observed = reduce_sum(self._observed.clone())
        self._observed.zero_()
        total, count = observed.tolist()
        if count == 0:
            return None
        r = total / count
        step = math.copysign(images / self.ada_speed_images, r - self.ada_target)
        self.p = min(max(self.p + step, 0.0), 1.0)
        return r

    def state_dict(self) -> dict[str, object]:
        return {"p": self.p, "generator": self.generator.get_state(), "observed": self._observed.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.p = float(state["p"])
        self.generator.set_state(state["generator"])
        self._observed.copy_(state["observed"])


def apply(x: Tensor, record: dict[str, Tensor], background: float = -1.0) -> Tensor:
    """Apply a parameter record to a batch `[B, C, *spatial]`; differentiable in `x`."""
    dims = x.ndim - 2

    def per_sample(t: Tensor) -> Tensor:  # [B] -> [B, 1, 1, ...] for broadcasting
        return t.view(-1, *([1] * (x.ndim - 1)))

    if "flip" in record:
        for axis in range(dims):
            x = torch.where(per_sample(record["flip"][:, axis]), x.flip(2 + axis), x)
    for key, turns in record.items():
        if key.startswith("rot90_"):
            plane = (2 + int(key[6]), 2 + int(key[7]))
            rotated = x
            for k in (1, 2, 3):
                rotated = torch.where(per_sample(turns == k), torch.rot90(x, k, plane), rotated)
            x = rotated
    if "translate" in record:
        x = _translate(x, record["translate"], background)
    if "scale" in record:
        x = _zoom(x, record["scale"], background)
    if "brightness" in record:
        x = x + per_sample(record["brightness"]).to(x.dtype)
    if "contrast" in record:
        mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
        x = (x - mean) * per_sample(record["contrast"]).to(x.dtype) + mean
    if "cutout" in record:
        inside = per_sample(record["cutout"]).expand(x.shape[0], 1, *x.shape[2:])
        for axis in range(dims):
            n = x.shape[2 + axis]
            coords = torch.arange(n, device=x.device).view(1, n)
            half = record["cutout_size"][:, axis : axis + 1].float() / 2
            near = (coords - record["cutout_center"][:, axis : axis + 1]).abs().float() < half  # [B, n]
            shape = [x.shape[0], 1] + [1] * dims
            shape[2 + axis] = n
            inside = inside & near.view(shape)
        x = torch.where(inside, torch.full_like(x, background), x)
    return x


def _translate(x: Tensor, shift: Tensor, background: float) -> Tensor:
    """Shift each sample by whole voxels (`shift` [B, dims]); uncovered voxels become background."""
    for axis in range(x.ndim - 2):
        n = x.shape[2 + axis]
        source = torch.arange(n, device=x.device).view(1, n) - shift[:, axis : axis + 1]  # [B, n]
        valid = (source >= 0) & (source < n)
        shape = [x.shape[0], 1] + [1] * (x.ndim - 2)
        shape[2 + axis] = n
        index = source.clamp(0, n - 1).view(shape).expand(x.shape)
        x = torch.where(valid.view(shape), torch.gather(x, 2 + axis, index), background)
    return x


def _zoom(x: Tensor, factor: Tensor, background: float) -> Tensor:
    """Isotropic zoom by `factor` [B] about the centre (>1 magnifies); outside becomes background."""
    dims = x.ndim - 2
    theta = torch.zeros(x.shape[0], dims, dims + 1, device=x.device, dtype=torch.float32)
    theta[:, range(dims), range(dims)] = (1.0 / factor.float()).unsqueeze(1)
    # grid_sample orders grid coordinates (W, H[, D]), the reverse of the tensor's axes; a
    # zoom's diagonal theta is symmetric in that order, so no permutation is needed.
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    zoomed = F.grid_sample(x.float() - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    zoomed = (zoomed + background).to(x.dtype)
    identity = (factor == 1.0).view(-1, *([1] * (x.ndim - 1)))
    return torch.where(identity, x, zoomed)
