"""Resolution loss: thick slices (a slice profile averaged along one axis) and in-plane blur with downsampling.

Both are linear maps along one axis at a time, built as small dense matrices from a voxel model in
which each input voxel is a box of its spacing, so non-integer ratios are exact:

* thick-slices: output slice m is the input averaged over the slice profile (a box of width
  `thickness_mm`, or a Gaussian of that FWHM) centred at c_m = first centre + (T - d) / 2 + m S, S the
  output slice spacing (= T: contiguous slices); slices whose profile would leave the volume are dropped.
* downsample: the output voxels are `factor` times larger; the image is blurred by a Gaussian of FWHM
  sqrt(factor^2 - 1) x spacing (so that, taking the input's own resolution as about one voxel, the
  output's is about one output voxel) and sampled at the new centres.

The output grid covers the input's field; its affine keeps orientation and moves the origin to the
first output voxel's centre (`output_geometry`). `back_to_input_grid` interpolates the result
linearly back onto the input grid (same shape and affine), as paired training wants.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from medgan.data.degradations.base import (
    Degradation,
    Param,
    as_batch_records,
    check_spacing,
    restore_dtype,
    spatial_axis,
    spatial_shape_of,
    working_dtype,
)
from medgan.data.degradations.registry import DEGRADATIONS
from medgan.errors import ConfigError

__all__ = ["Downsample", "ThickSlices", "interpolation_weights", "profile_weights"]

_FWHM_TO_SD = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def profile_weights(n_in: int, spacing: float, centres_mm, width_mm: float, profile: str = "box") -> torch.Tensor:
    """`[n_out, n_in]` weights of input voxels (boxes of `spacing` centred at k * spacing) under a profile
    of `width_mm` (box width or Gaussian FWHM) centred at each of `centres_mm`; rows sum to 1."""
    centres = torch.as_tensor(centres_mm, dtype=torch.float64)[:, None]
    lower = (torch.arange(n_in, dtype=torch.float64) * spacing - spacing / 2)[None, :]
    upper = lower + spacing
    if profile == "box":
        weights = (torch.minimum(upper, centres + width_mm / 2) - torch.maximum(lower, centres - width_mm / 2)).clamp(
            min=0.0
        )
    elif profile == "gaussian":
        sd = max(width_mm * _FWHM_TO_SD, 1e-6 * spacing)
        weights = _normal_cdf((upper - centres) / sd) - _normal_cdf((lower - centres) / sd)
    else:
        raise ValueError(f"unknown slice profile {profile!r} (valid: box, gaussian)")
    return weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-300)


@functools.lru_cache(maxsize=64)
def _weights(n_in: int, spacing: float, centres_mm: tuple, width_mm: float, profile: str) -> torch.Tensor:
    """`profile_weights`, remembered: a training run asks for the same few matrices at every step."""
    return profile_weights(n_in, spacing, centres_mm, width_mm, profile)


def _normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


def interpolation_weights(source_mm, target_mm) -> torch.Tensor:
    """`[n_target, n_source]` linear interpolation from samples at sorted `source_mm` to `target_mm`
    (held constant beyond the ends)."""
    source = np.asarray(source_mm, dtype=np.float64)
    weights = np.zeros((len(target_mm), len(source)))
    if len(source) == 1:
        weights[:, 0] = 1.0
        return torch.from_numpy(weights)
    for row, t in enumerate(np.asarray(target_mm, dtype=np.float64)):
        k = int(np.clip(np.searchsorted(source, t) - 1, 0, len(source) - 2))
        frac = float(np.clip((t - source[k]) / (source[k + 1] - source[k]), 0.0, 1.0))
        weights[row, k], weights[row, k + 1] = 1.0 - frac, frac
    return torch.from_numpy(weights)


def _along(x: torch.Tensor, matrix: torch.Tensor, axis: int) -> torch.Tensor:
    """Apply `matrix` `[n_out, n_in]` along spatial `axis` of `[C, *spatial]`."""
    moved = x.movedim(axis + 1, -1)
    return (moved @ matrix.to(x.device, x.dtype).T).movedim(-1, axis + 1)


class _AxisMaps(Degradation):
    """Shared by both: per-axis (matrix, new spacing, first-centre offset in input voxels)."""

    changes_grid = True

    def axis_maps(self, record: dict, shape, spacing) -> dict[int, tuple[torch.Tensor, float, float]]:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, records: dict | Sequence[dict], spacing_mm: Sequence[float] | None = None):
        shape = spatial_shape_of(x, self.name)
        records = as_batch_records(records, x.shape[0], self.name)
        spacing = check_spacing(spacing_mm, len(shape), self.name)
        image = x.to(working_dtype(x))
        out = []
        for item, record in zip(image, records, strict=True):
            for axis, (matrix, new_spacing, offset) in self.axis_maps(record, shape, spacing).items():
                item = _along(item, matrix, axis)
                if record["back_to_input_grid"]:
                    centres = [offset * spacing[axis] + m * new_spacing for m in range(matrix.shape[0])]
                    inputs = [k * spacing[axis] for k in range(shape[axis])]
                    item = _along(item, interpolation_weights(centres, inputs), axis)
            out.append(item)
        if len({tuple(o.shape) for o in out}) > 1:
            raise ValueError(f"{self.name}: records give different output grids; apply them one at a time")
        return restore_dtype(torch.stack(out), x)

    def output_geometry(self, record: dict, shape: Sequence[int], affine, spacing_mm=None):
        """The output's spatial shape and affine (numpy 4x4, RAS), for an input of `shape` and `affine`."""
        affine = np.asarray(affine, dtype=np.float64)
        spacing = check_spacing(spacing_mm, len(shape), self.name)
        if record["back_to_input_grid"]:
            return tuple(shape), affine.copy()
        new_shape, new_affine = list(shape), affine.copy()
        for axis, (matrix, new_spacing, offset) in self.axis_maps(record, shape, spacing).items():
            new_shape[axis] = matrix.shape[0]
            column = affine[:3, axis]
            new_affine[:3, 3] += column * offset
            new_affine[:3, axis] = column * (new_spacing / spacing[axis])
        return tuple(new_shape), new_affine


@DEGRADATIONS.register("thick-slices")
class ThickSlices(_AxisMaps):
    """Thick slices: the slice profile averaged along `axis`, resampled at the new slice spacing."""

    name = "thick-slices"
    axis_param = "axis"
    params = (
        Param("thickness_mm", "mm", "slice thickness (box width or Gaussian FWHM)", low=0.01, high=100.0,
              mild=2.0, severe=6.0, per_spacing=True),
        Param("slice_spacing_mm", "mm", "distance between output slices (default: the thickness)", low=0.01,
              high=100.0, default=None),
        Param("profile", "", "slice sensitivity profile", kind="choice", choices=("box", "gaussian"), default="box"),
        Param("axis", "", "the spatial axis across the slices", kind="int", low=-3, high=2, default=-1),
        Param("back_to_input_grid", "", "interpolate back onto the input grid", kind="bool", default=False),
    )  # fmt: skip

    def sample_extra(self, record: dict, generator: torch.Generator, spatial_dims: int, spacing_mm=None) -> dict:
        return {"slice_spacing_mm": record["slice_spacing_mm"] or record["thickness_mm"]}

    def axis_maps(self, record: dict, shape, spacing):
        axis = spatial_axis(record["axis"], len(shape), self.name, "axis")
        n, step = shape[axis], spacing[axis]
        thickness, between = record["thickness_mm"], record["slice_spacing_mm"]
        if thickness < step * (1 - 1e-9):
            raise ConfigError(
                f"{self.name}: thickness_mm = {thickness:g} is thinner than the input's {step:g} mm slice spacing"
                f" (axis {axis})"
            )
        count = math.floor((n * step - thickness) / between + 1e-9) + 1
        if count < 1:
            raise ConfigError(
                f"{self.name}: thickness_mm = {thickness:g} exceeds the {n * step:g} mm the volume spans (axis {axis})"
            )
        first = (thickness - step) / 2
        centres = [first + m * between for m in range(count)]
        return {axis: (_weights(n, step, tuple(centres), thickness, record["profile"]), between, first / step)}


@DEGRADATIONS.register("downsample")
class Downsample(_AxisMaps):
    """Lower resolution: Gaussian blur and sampling on a grid `factor` times coarser, along the in-plane
    axes (every axis but `slice_axis` in 3D, both in 2D) or along all axes."""

    name = "downsample"
    params = (
        Param("factor", "", "output voxel size / input voxel size", low=1.0, high=16.0, mild=1.5, severe=4.0),
        Param("axes", "", "which axes lose resolution", kind="choice", choices=("in-plane", "all"),
              default="in-plane"),
        Param("slice_axis", "", "3D, in-plane: the axis left alone", kind="int", low=-3, high=2, default=-1),
        Param("back_to_input_grid", "", "interpolate back onto the input grid", kind="bool", default=False),
    )  # fmt: skip

    def axis_maps(self, record: dict, shape, spacing):
        factor = record["factor"]
        if len(shape) == 3 and record["axes"] == "in-plane":
            axes = [a for a in range(3) if a != spatial_axis(record["slice_axis"], 3, self.name, "slice_axis")]
        else:
            axes = list(range(len(shape)))
        maps = {}
        for axis in axes:
            n, step = shape[axis], spacing[axis]
            count = math.floor(n / factor + 1e-9)
            if count < 1:
                raise ConfigError(f"{self.name}: factor = {factor:g} leaves no voxel along axis {axis} ({n} voxels)")
            first = (factor - 1) / 2 * step
            centres = [first + m * factor * step for m in range(count)]
            fwhm = math.sqrt(max(factor**2 - 1.0, 0.0)) * step
            maps[axis] = (_weights(n, step, tuple(centres), fwhm, "gaussian"), factor * step, (factor - 1) / 2)
        return maps
