"""Parallel-beam projection and filtered back-projection in PyTorch (CPU or GPU, batched, differentiable).

Geometry, in millimetres: a plane `[H, W]` has its centre at ((H-1)/2, (W-1)/2); a pixel at row r,
column c sits at x = (c - (W-1)/2) * dx, y = (r - (H-1)/2) * dy. The ray at angle theta and detector
offset t is the line x cos(theta) - y sin(theta) = t (scikit-image's `radon` convention, so the two can
be compared), and detector bin i sits at t = (i - (n-1)/2) * bin_mm. Angles cover [0, pi).

Projection samples the image bilinearly along each ray at steps of one bin width and sums (times the
step): a rotation-based ray-driven projector. Back-projection interpolates the filtered projections
linearly at t = x cos(theta) - y sin(theta) for every pixel and sums over angles times pi / angles.
The ramp filter is Kak and Slaney's band-limited discrete kernel (Principles of Computerized
Tomographic Imaging, 1988, eq. 3.61) applied by FFT after zero-padding to at least twice the detector,
so the circular convolution does not wrap; optional apodizing windows taper its high frequencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "WINDOWS",
    "backproject",
    "coarse_projection",
    "detector_geometry",
    "fbp",
    "project",
    "ramp_filter",
    "view_angles",
]

WINDOWS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
_CHUNK_ELEMENTS = {"cpu": 2**24, "cuda": 2**28}  # interpolated samples held at once (memory bound)


def view_angles(views: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """`views` equally spaced angles over [0, pi), in radians."""
    return torch.arange(views, device=device, dtype=torch.float64).mul(math.pi / views).to(dtype)


def detector_geometry(shape: Sequence[int], spacing_mm: Sequence[float]) -> tuple[int, float]:
    """(bins, bin width in mm) of a detector that sees the whole plane at every angle: bins as wide as
    the finer pixel side, enough of them (odd, so one sits on the centre) to span the plane's diagonal."""
    height, width = shape
    dy, dx = (float(s) for s in spacing_mm)
    bin_mm = min(dy, dx)
    diagonal = math.hypot((height - 1) * dy, (width - 1) * dx)
    bins = math.ceil(diagonal / bin_mm) + 2
    return bins + (1 - bins % 2), bin_mm


def _chunk(per_item: int, device: torch.device) -> int:
    budget = _CHUNK_ELEMENTS["cuda" if device.type == "cuda" else "cpu"]
    return max(1, budget // max(per_item, 1))


def project(
    planes: torch.Tensor,  # [N, H, W] attenuation (1/mm) or any quantity to integrate
    angles: torch.Tensor,  # [A] radians
    spacing_mm: Sequence[float] = (1.0, 1.0),  # (dy between rows, dx between columns)
    bins: int | None = None,  # detector bins (default: detector_geometry)
    bin_mm: float | None = None,  # bin width in mm (default: the finer pixel side)
) -> torch.Tensor:
    """Line integrals `[N, A, bins]` (unit of planes x mm) of each plane along parallel rays."""
    n, height, width = planes.shape
    default_bins, default_bin = detector_geometry((height, width), spacing_mm)
    bins, bin_mm = bins or default_bins, bin_mm or default_bin
    dy, dx = (float(s) for s in spacing_mm)
    steps = bins  # samples along each ray, one bin width apart, spanning the same diagonal
    dtype, device = planes.dtype, planes.device
    t = (torch.arange(bins, device=device, dtype=dtype) - (bins - 1) / 2) * bin_mm
    s = (torch.arange(steps, device=device, dtype=dtype) - (steps - 1) / 2) * bin_mm
    out = planes.new_zeros((n, len(angles), bins))
    source = planes.unsqueeze(0)  # [1, N, H, W]: planes as channels share one sampling grid
    per_angle = bins * steps
    angle_chunk = _chunk(per_angle * n, device)
    plane_chunk = n if angle_chunk > 1 else _chunk(per_angle, device)
    for a0 in range(0, len(angles), angle_chunk):
        theta = angles[a0 : a0 + angle_chunk].to(dtype)
        cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        # the point at detector offset t and ray position s: x = t cos + s sin, y = -t sin + s cos
        x = t[None, :, None] * cos + s[None, None, :] * sin
        y = -t[None, :, None] * sin + s[None, None, :] * cos
        grid = torch.stack((x / (max(width - 1, 1) * dx / 2), y / (max(height - 1, 1) * dy / 2)), dim=-1)
        grid = grid.reshape(1, -1, steps, 2)  # [1, angles*bins, steps, 2]
        for p0 in range(0, n, plane_chunk):
            sampled = F.grid_sample(
                source[:, p0 : p0 + plane_chunk], grid, mode="bilinear", padding_mode="zeros", align_corners=True
            )  # [1, planes, angles*bins, steps]
            sums = sampled.sum(dim=-1).reshape(-1, len(theta), bins) * bin_mm
            out[p0 : p0 + plane_chunk, a0 : a0 + len(theta)] = sums
    return out


def coarse_projection(
    planes: torch.Tensor,  # [N, H, W]
    views: int,  # views of the wanted sinogram over [0, pi)
    spacing_mm: Sequence[float],  # (dy, dx)
    coarsening: int = 2,  # pixels, bins and views this many times fewer along each direction
) -> torch.Tensor:
    """Line integrals on the detector of `detector_geometry(planes, spacing_mm)` at `views` angles, computed
    on a coarser grid and interpolated linearly: about coarsening^3 times cheaper, and exact for smooth
    planes. For quantities that vary slowly across rays, such as expected photon counts."""
    height, width = planes.shape[-2:]
    bins, bin_mm = detector_geometry((height, width), spacing_mm)
    if coarsening <= 1:
        return project(planes, view_angles(views, planes.device, planes.dtype), spacing_mm, bins, bin_mm)
    size = (max(2, -(-height // coarsening)), max(2, -(-width // coarsening)))
    # antialiased resampling onto a grid with the same centre and extent, spacing scaled by H / h
    pooled = F.interpolate(planes.unsqueeze(1), size, mode="bilinear", antialias=True, align_corners=False)[:, 0]
    spacing = (spacing_mm[0] * height / size[0], spacing_mm[1] * width / size[1])
    coarse_views = max(2, -(-views // coarsening))
    coarse = project(pooled, view_angles(coarse_views, planes.device, planes.dtype), spacing)  # [N, Vc, Bc]
    coarse_bins, coarse_bin_mm = detector_geometry(size, spacing)
    # the view at pi is the first one mirrored (t -> -t), so angles wrap round smoothly
    coarse = torch.cat((coarse, coarse[:, :1].flip(-1)), dim=1).unsqueeze(1)  # [N, 1, Vc + 1, Bc]
    t = (torch.arange(bins, device=planes.device, dtype=planes.dtype) - (bins - 1) / 2) * bin_mm
    row = torch.arange(views, device=planes.device, dtype=planes.dtype) * (coarse_views / views)  # in coarse views
    grid = torch.stack(
        torch.broadcast_tensors(
            (t / ((coarse_bins - 1) * coarse_bin_mm / 2))[None, :], (row * 2 / coarse_views - 1)[:, None]
        ),
        dim=-1,
    )  # [views, bins, 2]
    grid = grid.unsqueeze(0).expand(planes.shape[0], -1, -1, -1)
    return F.grid_sample(coarse, grid, mode="bilinear", padding_mode="zeros", align_corners=True).squeeze(1)


def _window(name: str, freq: torch.Tensor) -> torch.Tensor:
    """Apodizing window at frequencies in cycles per sample ([-0.5, 0.5))."""
    if name == "ram-lak":
        return torch.ones_like(freq)
    if name == "shepp-logan":
        return torch.sinc(freq)  # sin(pi f) / (pi f)
    if name == "cosine":
        return torch.cos(math.pi * freq)
    if name == "hamming":
        return 0.54 + 0.46 * torch.cos(2 * math.pi * freq)
    if name == "hann":
        return 0.5 + 0.5 * torch.cos(2 * math.pi * freq)
    raise ValueError(f"unknown filter window {name!r} (valid: {', '.join(WINDOWS)})")


def ramp_filter(sinogram: torch.Tensor, bin_mm: float = 1.0, window: str = "ram-lak") -> torch.Tensor:
    """Filter each projection `[..., bins]` with the discrete ramp (Kak & Slaney) times `window`."""
    bins = sinogram.shape[-1]
    padded = max(64, 1 << math.ceil(math.log2(2 * bins)))
    real = torch.float64 if sinogram.dtype == torch.float64 else torch.float32
    offsets = torch.arange(padded, device=sinogram.device)
    offsets = torch.where(offsets <= padded // 2, offsets, offsets - padded).to(real)  # signed, wrapped
    kernel = torch.zeros(padded, device=sinogram.device, dtype=real)
    odd = offsets.remainder(2) == 1
    kernel[odd] = -1.0 / (math.pi**2 * offsets[odd] ** 2 * bin_mm**2)
    kernel[0] = 1.0 / (4 * bin_mm**2)
    response = torch.fft.fft(kernel).real * bin_mm  # the convolution sum's step
    response = response * _window(window, torch.fft.fftfreq(padded, device=sinogram.device).to(real))
    spectrum = torch.fft.fft(sinogram.to(real), n=padded, dim=-1)
    return torch.fft.ifft(spectrum * response, dim=-1).real[..., :bins].to(sinogram.dtype)


def backproject(
    filtered: torch.Tensor,  # [N, A, bins]
    angles: torch.Tensor,  # [A] radians over [0, pi)
    shape: Sequence[int],  # (H, W) of the output planes
    spacing_mm: Sequence[float] = (1.0, 1.0),  # (dy, dx)
    bin_mm: float = 1.0,
) -> torch.Tensor:
    """Sum over angles of the projections interpolated at each pixel, times pi / angles: `[N, H, W]`."""
    n, views, bins = filtered.shape
    height, width = shape
    dy, dx = (float(s) for s in spacing_mm)
    dtype, device = filtered.dtype, filtered.device
    x = ((torch.arange(width, device=device, dtype=dtype) - (width - 1) / 2) * dx)[None, :]
    y = ((torch.arange(height, device=device, dtype=dtype) - (height - 1) / 2) * dy)[:, None]
    x, y = x.expand(height, width).reshape(-1), y.expand(height, width).reshape(-1)
    source = filtered.unsqueeze(0)  # [1, N, A, bins]: an image whose rows are the views
    out = filtered.new_zeros((n, height * width))
    angle_chunk = _chunk(height * width * n, device)
    plane_chunk = n if angle_chunk > 1 else _chunk(height * width, device)
    half_span = max(bins - 1, 1) * bin_mm / 2
    for a0 in range(0, views, angle_chunk):
        index = torch.arange(a0, min(a0 + angle_chunk, views), device=device)
        theta = angles[index].to(dtype)
        t = x[None, :] * torch.cos(theta)[:, None] - y[None, :] * torch.sin(theta)[:, None]  # [a, H*W]
        row = (index.to(dtype) * 2 / max(views - 1, 1) - 1)[:, None].expand_as(t)  # exactly on each view's row
        grid = torch.stack((t / half_span, row), dim=-1).unsqueeze(0)  # [1, a, H*W, 2]
        for p0 in range(0, n, plane_chunk):
            sampled = F.grid_sample(
                source[:, p0 : p0 + plane_chunk], grid, mode="bilinear", padding_mode="zeros", align_corners=True
            )  # [1, planes, a, H*W]
            out[p0 : p0 + plane_chunk] += sampled[0].sum(dim=1)
    return (out * (math.pi / views)).reshape(n, height, width)


def fbp(
    sinogram: torch.Tensor,  # [N, A, bins] line integrals
    angles: torch.Tensor,  # [A] radians over [0, pi)
    shape: Sequence[int],  # (H, W) of the output planes
    spacing_mm: Sequence[float] = (1.0, 1.0),  # (dy, dx) of the output planes
    bin_mm: float = 1.0,  # detector bin width
    window: str = "ram-lak",  # ram-lak, shepp-logan, cosine, hamming or hann
) -> torch.Tensor:
    """Filtered back-projection of parallel-beam projections onto planes `[N, H, W]`."""
    return backproject(ramp_filter(sinogram, bin_mm, window), angles, shape, spacing_mm, bin_mm)
