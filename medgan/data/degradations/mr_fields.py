"""MR intensity degradations in image space: Rician noise and a smooth multiplicative bias field."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from medgan.data.degradations.base import (
    Degradation,
    Param,
    as_batch_records,
    item_generator,
    restore_dtype,
    spatial_shape_of,
    working_dtype,
)
from medgan.data.degradations.registry import DEGRADATIONS

__all__ = ["MRBias", "MRNoise", "bias_field", "reference_signal"]


def reference_signal(image: torch.Tensor) -> float:
    """The signal that SNR refers to: the mean of the voxels brighter than a tenth of the 99th percentile
    (the object, not the background), over all channels of one image."""
    values = image.detach().reshape(-1).float()
    rank = max(1, math.ceil(0.99 * values.numel()))  # the 99th percentile by selection, not by a full sort
    threshold = 0.1 * values.kthvalue(rank).values
    bright = (values > threshold).to(values.dtype)
    count = float(bright.sum())
    return float((values * bright).sum()) / count if count else 0.0


@DEGRADATIONS.register("mr-noise")
class MRNoise(Degradation):
    """Rician noise: Gaussian noise of SD sigma on the real and imaginary channels of the (real) magnitude
    image, then the magnitude; sigma = reference_signal / snr. The background becomes Rayleigh
    distributed (mean sigma sqrt(pi/2), variance (2 - pi/2) sigma^2)."""

    name = "mr-noise"
    params = (
        Param("snr", "", "reference signal / noise SD per channel", low=0.5, high=1e4, mild=40.0, severe=5.0,
              log=True),
    )  # fmt: skip

    def apply(self, x: torch.Tensor, records: dict | Sequence[dict], spacing_mm: Sequence[float] | None = None):
        spatial_shape_of(x, self.name)
        records = as_batch_records(records, x.shape[0], self.name)
        image = x.to(working_dtype(x))
        out = []
        for item, record in zip(image, records, strict=True):
            sigma = reference_signal(item) / record["snr"]
            generator = item_generator(record["noise_seed"], item.device)
            real = torch.randn(item.shape, generator=generator, device=item.device, dtype=item.dtype)
            imaginary = torch.randn(item.shape, generator=generator, device=item.device, dtype=item.dtype)
            out.append(torch.hypot(item + sigma * real, sigma * imaginary))
        return restore_dtype(torch.stack(out), x)


def monomials(spatial_dims: int, order: int) -> list[tuple[int, ...]]:
    """Exponents of every monomial of total degree 1..order in `spatial_dims` variables, in a fixed order."""
    terms = [e for e in itertools.product(range(order + 1), repeat=spatial_dims) if 0 < sum(e) <= order]
    return sorted(terms, key=lambda e: (sum(e), tuple(-v for v in e)))


def bias_field(shape: Sequence[int], terms: Sequence, log_amplitude: float, device=None, dtype=torch.float32):
    """exp(a * P) on a grid of `shape`, P the polynomial sum(c * u^e) of `terms` [[exponents, c], ...] over
    coordinates u in [-1, 1] per axis, shifted and scaled so that P spans exactly [-1, 1]: the field is
    smooth, positive and spans [exp(-a), exp(a)] (or is 1 everywhere when P is flat)."""
    order = max((max(e) for e, _ in terms), default=0)
    coefficients = torch.zeros((order + 1,) * len(shape), dtype=torch.float64)
    for exponents, coefficient in terms:
        coefficients[tuple(exponents)] += float(coefficient)
    poly = coefficients.to(device)
    for n in shape:  # contract the leading exponent axis with this axis's powers u^e; the voxel axis goes last
        u = torch.linspace(-1.0, 1.0, n, device=device, dtype=torch.float64) if n > 1 else poly.new_zeros(1)
        powers = u[:, None] ** torch.arange(order + 1, device=device, dtype=torch.float64)  # [n, order + 1]
        poly = torch.tensordot(poly, powers, dims=([0], [1]))
    low, high = poly.min(), poly.max()
    if float(high - low) <= 1e-12:
        return torch.ones(tuple(shape), device=device, dtype=dtype)
    normalized = (poly - (high + low) / 2) / ((high - low) / 2)
    return torch.exp(log_amplitude * normalized).to(dtype)


@DEGRADATIONS.register("mr-bias")
class MRBias(Degradation):
    """Intensity non-uniformity: the image times a smooth positive polynomial field (`bias_field`)."""

    name = "mr-bias"
    params = (
        Param("log_amplitude", "", "the field spans [exp(-a), exp(a)]", low=0.0, high=2.0, mild=0.1, severe=0.5),
        Param("order", "", "highest total degree of the polynomial", kind="int", low=1, high=5, default=3),
    )

    def sample_extra(self, record: dict, generator: torch.Generator, spatial_dims: int, spacing_mm=None) -> dict:
        exponents = monomials(spatial_dims, record["order"])
        coefficients = (torch.rand(len(exponents), generator=generator, dtype=torch.float64) * 2 - 1).tolist()
        return {"terms": [[list(e), round(c, 6)] for e, c in zip(exponents, coefficients, strict=True)]}

    def apply(self, x: torch.Tensor, records: dict | Sequence[dict], spacing_mm: Sequence[float] | None = None):
        shape = spatial_shape_of(x, self.name)
        records = as_batch_records(records, x.shape[0], self.name)
        image = x.to(working_dtype(x))
        fields = []
        for record in records:
            if any(len(e) != len(shape) for e, _ in record["terms"]):
                raise ValueError(f"{self.name}: the record's terms do not fit {len(shape)}D images")
            fields.append(bias_field(shape, record["terms"], record["log_amplitude"], image.device, image.dtype))
        return restore_dtype(image * torch.stack(fields).unsqueeze(1), x)
