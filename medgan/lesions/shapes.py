"""Lesion geometry: a deformed ellipsoid rendered with partial volume on the scan's own voxel grid.

The surface in the lesion's frame, in units of the ellipsoid's semi-axes (p = z / axes), is the
star-shaped `|p| = R(u)`, u = p / |p|, with

    R(u) = 1 + lobulation * normalised(sum_k w_k exp(kappa (u . v_k - 1)))       smooth lobes
             + sum_j L_j exp(kappa_s (u . s_j - 1))                              thin spicules

(von Mises-Fisher bumps on the sphere; the lobe sum is normalised to zero mean and unit rms over
a fixed set of directions, so `lobulation` is the rms radial deformation). The volume is
abc (4 pi / 3) mean(R^3), which sampling uses to scale the axes to the requested diameter.

Rendering gives, for each voxel of a box around the centre, the fraction of the voxel inside the
lesion (partial volume) and inside each compartment (rim, core, calcifications). Voxels far from
every boundary are decided at their centre; voxels within 1.5 half-diagonals of a boundary (by a
first-order distance, the implicit function over its gradient) are supersampled, about 0.4 mm
apart along each axis. The label mask is the N voxels of largest partial volume, N = the rounded
sum of partial volumes, so the mask's volume is the lesion's to half a voxel whatever its size
relative to the voxels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medgan.lesions.grid import voxel_offsets_mm
from medgan.lesions.record import Compartments, ShapeParams

__all__ = ["LesionShape", "extent_mm", "inscribed_mm", "render_shape", "volume_scale"]

_SPHERE_POINTS = 2048  # directions on which lobes are normalised and volumes integrated
_SUBSAMPLE_MM = 0.4  # spacing of the supersamples in boundary voxels
_MAX_SUBSAMPLES = 8  # per axis
_CHUNK_POINTS = 1 << 21  # supersamples evaluated at a time


@functools.lru_cache(maxsize=4)
def fibonacci_sphere(n: int = _SPHERE_POINTS) -> np.ndarray:
    """n nearly uniform unit vectors (float64, read-only), the same every time."""
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    phi = math.pi * (1 + math.sqrt(5)) * k
    r = np.sqrt(1 - z * z)
    points = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    points.flags.writeable = False
    return points


def _lobe_sum(u, lobes: np.ndarray, kappa: float, lib):
    if len(lobes) == 0:
        return u[..., 0] * 0
    directions, weights = lobes[:, :3], lobes[:, 3]
    return (lib.exp(kappa * (u @ directions.T - 1)) * weights).sum(-1)


def _lobe_stats(shape: ShapeParams) -> tuple[float, float]:
    """Mean and rms deviation of the raw lobe sum over the sphere (float64, CPU: identical everywhere)."""
    lobes = np.asarray(shape.lobes, dtype=np.float64).reshape(-1, 4)
    if len(lobes) == 0 or shape.lobulation == 0:
        return 0.0, 1.0
    values = _lobe_sum(fibonacci_sphere(), lobes, shape.lobe_kappa, np)
    sd = float(values.std())
    return float(values.mean()), sd if sd > 1e-12 else 1.0


def radius(u, shape: ShapeParams, stats: tuple[float, float], lib=np):
    """R(u) in radii for unit vectors `u` [..., 3] (numpy or torch, as `lib`)."""
    lobes = np.asarray(shape.lobes, dtype=np.float64).reshape(-1, 4)
    spicules = np.asarray(shape.spicules, dtype=np.float64).reshape(-1, 4)
    if lib is torch:
        lobes = torch.as_tensor(lobes, dtype=u.dtype, device=u.device)
        spicules = torch.as_tensor(spicules, dtype=u.dtype, device=u.device)
    value = 1 + shape.lobulation * (_lobe_sum(u, lobes, shape.lobe_kappa, lib) - stats[0]) / stats[1]
    if len(spicules):
        value = value + _lobe_sum(u, spicules, shape.spicule_kappa, lib)
    return value.clip(0.2, None) if lib is np else value.clamp(min=0.2)


def volume_scale(shape: ShapeParams) -> float:
    """The factor that scales `shape.axes_mm` to the volume of a sphere of `shape.diameter_mm`."""
    u = fibonacci_sphere()
    r = radius(u, shape, _lobe_stats(shape))
    volume = float(np.prod(shape.axes_mm)) * 4 * math.pi / 3 * float(np.mean(r**3))
    target = math.pi / 6 * shape.diameter_mm**3
    return (target / volume) ** (1 / 3)


def extent_mm(shape: ShapeParams) -> float:
    """A bound on the distance from the centre to any point of the lesion (mm)."""
    u = fibonacci_sphere(8192)
    extra = [np.asarray(part, float).reshape(-1, 4)[:, :3] for part in (shape.lobes, shape.spicules)]
    u = np.concatenate([u, *[e / np.linalg.norm(e, axis=1, keepdims=True) for e in extra if len(e)]])
    r = radius(u, shape, _lobe_stats(shape))
    return float(r.max()) * 1.05 * max(shape.axes_mm)


@dataclass
class LesionShape:
    """A rendered lesion on a box of voxels around its centre voxel (all `[2h0+1, 2h1+1, 2h2+1]`)."""

    half: tuple[int, int, int]
    occupancy: Tensor  # fraction of each voxel inside the lesion
    mask: Tensor  # bool: the label mask
    rim: Tensor  # fraction of each voxel in the rim
    core: Tensor  # fraction in the necrotic core
    calcification: Tensor  # fraction in calcifications
    halo: Tensor  # oedema weight, 1 at the surface fading to 0 at halo_mm outside
    distance_mm: Tensor  # signed distance to the surface (negative inside), first order

    def cropped(self, part: tuple[slice, slice, slice]) -> LesionShape:
        """The same lesion on a part of its box (where the box meets the image)."""
        arrays = {f: getattr(self, f)[part] for f in ("occupancy", "mask", "rim", "core", "calcification", "halo",
                                                       "distance_mm")}  # fmt: skip
        return LesionShape(self.half, **arrays)


def inscribed_mm(shape: ShapeParams) -> float:
    """A lower bound on the radius of the largest ball about the centre inside the lesion (mm)."""
    return float(radius(fibonacci_sphere(8192), shape, _lobe_stats(shape)).min()) * 0.95 * min(shape.axes_mm)


def _implicit(offsets: Tensor, rotation: Tensor, axes: Tensor, shape: ShapeParams, stats, core_fraction: float):
    """(rho - R(u), rho - core R(u), lesion-frame positions) for world offsets [..., 3]."""
    z = offsets @ rotation
    p = z / axes
    rho = torch.linalg.vector_norm(p, dim=-1)
    u = p / rho.clamp(min=1e-9)[..., None]
    r = radius(u, shape, stats, lib=torch)
    return rho - r, rho - core_fraction * r, z


def _first_order_distance(value: Tensor, inverse_linear: Tensor) -> tuple[Tensor, Tensor]:
    """value / |grad value| in mm, and the unit world gradient, from central differences on the box."""
    grads = torch.stack(torch.gradient(value), dim=-1)  # per voxel step
    world = grads @ inverse_linear  # d value / d world (mm^-1)
    norm = torch.linalg.vector_norm(world, dim=-1).clamp(min=1e-9)
    return value / norm, world / norm[..., None]


def render_shape(
    shape: ShapeParams,
    compartments: Compartments,
    linear: Tensor,  # the affine's 3x3 part (mm per voxel step), float32 on the target device
    half: Sequence[int],  # box half-size in voxels
) -> LesionShape:
    """Partial-volume fractions of the lesion and its compartments on a box around the centre voxel.

    Only the part of the box the lesion and its halo can reach is computed; the rest is padded."""
    spacing = torch.linalg.vector_norm(linear, dim=0).tolist()
    reach_mm = extent_mm(shape) + compartments.halo_mm
    inner = [min(int(h), math.ceil(reach_mm / s) + 2) for h, s in zip(half, spacing, strict=True)]
    rendered = _render(shape, compartments, linear, inner)
    if list(inner) == [int(h) for h in half]:
        return rendered
    pad = []
    for h, i in zip(reversed([int(h) for h in half]), reversed(inner), strict=True):
        pad += [h - i, h - i]
    arrays = {}
    for name in ("occupancy", "mask", "rim", "core", "calcification", "halo", "distance_mm"):
        value = getattr(rendered, name)
        fill = float("inf") if name == "distance_mm" else 0.0
        padded = F.pad(value.to(torch.float32)[None, None], pad, value=fill)[0, 0]
        arrays[name] = padded.bool() if name == "mask" else padded
    return LesionShape(tuple(int(h) for h in half), **arrays)


def _render(shape: ShapeParams, compartments: Compartments, linear: Tensor, half: Sequence[int]) -> LesionShape:
    device, dtype = linear.device, torch.float32
    spacing = torch.linalg.vector_norm(linear, dim=0)
    inverse = torch.linalg.inv(linear.double()).to(dtype)
    rotation = torch.tensor(shape.rotation, dtype=dtype, device=device)
    axes = torch.tensor(shape.axes_mm, dtype=dtype, device=device)
    subvoxel = torch.tensor(shape.subvoxel, dtype=dtype, device=device)
    stats = _lobe_stats(shape)
    offsets = voxel_offsets_mm(half, linear, subvoxel)
    surface, core, z = _implicit(offsets, rotation, axes, shape, stats, compartments.core_fraction)
    distance, normal = _first_order_distance(surface, inverse)
    reach = 1.5 * 0.5 * float(torch.linalg.vector_norm(spacing))
    calcs = torch.tensor(compartments.calcifications, dtype=dtype, device=device).reshape(-1, 4)
    calc_centres, calc_radii = calcs[:, :3] * axes, calcs[:, 3]
    band = distance.abs() < reach
    if compartments.rim_mm > 0:
        band |= (distance + compartments.rim_mm).abs() < reach
    if compartments.core_fraction > 0:
        band |= _first_order_distance(core, inverse)[0].abs() < reach
    if len(calcs):
        band |= _calc_distance(z, calc_centres, calc_radii).abs() < reach
    inside = distance <= 0
    occupancy = inside.to(dtype)
    none = torch.zeros_like(occupancy)
    rim = (inside & (distance >= -compartments.rim_mm)).to(dtype) if compartments.rim_mm > 0 else none.clone()
    core_frac = ((core <= 0) & inside).to(dtype) if compartments.core_fraction > 0 else none.clone()
    calc = _in_calcs(z, calc_centres, calc_radii).to(dtype) * occupancy
    where = band.nonzero()
    if len(where):
        fractions = _supersample(offsets[band], distance[band], normal[band], linear, spacing, rotation, axes,
                                 shape, stats, compartments, calc_centres, calc_radii)  # fmt: skip
        for target, value in zip((occupancy, rim, core_frac, calc), fractions, strict=True):
            target[band] = value
    halo = torch.zeros_like(occupancy)
    if compartments.halo_mm > 0:
        halo = (1 - distance.clamp(min=0) / compartments.halo_mm).clamp(0, 1)
    return LesionShape(tuple(int(h) for h in half), occupancy, _top_mask(occupancy), rim, core_frac, calc, halo,
                       distance)  # fmt: skip


def _calc_distance(z: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """Distance (mm) from each point to the nearest calcification's surface (negative inside): [...]."""
    gaps = [torch.linalg.vector_norm(z - c, dim=-1) - r for c, r in zip(centres, radii, strict=True)]
    return torch.stack(gaps).amin(0)


def _in_calcs(z: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    if len(centres) == 0:
        return torch.zeros(z.shape[:-1], dtype=torch.bool, device=z.device)
    return _calc_distance(z, centres, radii) <= 0


def _supersample(centres, distance, normal, linear, spacing, rotation, axes, shape, stats, compartments,
                 calc_centres, calc_radii):  # fmt: skip
    """Fractions (lesion, rim, core, calcification) of each boundary voxel, from regular supersamples."""
    counts = [min(_MAX_SUBSAMPLES, max(2, math.ceil(float(h) / _SUBSAMPLE_MM))) for h in spacing]
    steps = [(torch.arange(n, device=linear.device, dtype=linear.dtype) + 0.5) / n - 0.5 for n in counts]
    sub = torch.stack(torch.meshgrid(*steps, indexing="ij"), dim=-1).reshape(-1, 3) @ linear.T  # [S, 3] mm
    per_chunk = max(1, _CHUNK_POINTS // sub.shape[0])
    sums = [torch.zeros(len(centres), dtype=linear.dtype, device=linear.device) for _ in range(4)]
    for start in range(0, len(centres), per_chunk):
        part = slice(start, start + per_chunk)
        points = centres[part, None, :] + sub[None]  # [B, S, 3]
        surface, core, z = _implicit(points, rotation, axes, shape, stats, compartments.core_fraction)
        inside = surface <= 0
        sums[0][part] = inside.float().mean(1)
        if compartments.rim_mm > 0:
            linear_distance = distance[part, None] + (sub[None] * normal[part, None]).sum(-1)
            sums[1][part] = (inside & (linear_distance >= -compartments.rim_mm)).float().mean(1)
        if compartments.core_fraction > 0:
            sums[2][part] = (inside & (core <= 0)).float().mean(1)
        if len(calc_centres):
            sums[3][part] = (inside & _in_calcs(z, calc_centres, calc_radii)).float().mean(1)
    return sums


def _top_mask(occupancy: Tensor) -> Tensor:
    """The round(sum) voxels of largest occupancy (at least one); ties go to the lower flat index."""
    flat = occupancy.reshape(-1)
    count = max(1, round(float(flat.sum())))
    order = torch.sort(-flat, stable=True).indices[:count]
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[order] = True
    return mask.reshape(occupancy.shape) & (occupancy > 0)
