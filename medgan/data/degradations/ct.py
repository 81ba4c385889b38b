"""Low-dose CT from an image in HU: projection, photon and electronic noise, filtered back-projection.

The input is taken as the full-dose image and, for the noise, as noise-free. Per plane (2D images, or
each plane across the slice axis of a volume):

1. HU to linear attenuation at an effective energy of about 70 keV: mu = mu_water (1 + HU / 1000),
   negative values (below air) clipped to 0; mu_water = 0.0193 / mm (NIST XCOM mass attenuation of
   liquid water, 0.206 cm^2/g at 60 keV and 0.184 at 80 keV, interpolated, times 1 g/cm^3).
2. Parallel-beam line integrals p over `views` angles in [0, pi) (`medgan.data.degradations.projector`),
   by default computed on a grid twice as coarse in pixels, bins and views and interpolated
   (`projection_coarsening`): p only sets the expected counts, which vary slowly across rays, and
   this makes the projection about 8 times cheaper. The noise itself is drawn for every bin and view.
3. Detected quanta N = Poisson(I0 e^-p) + Normal(0, electronic_noise_sd^2), with the incident quanta per
   bin and view I0 = incident_flux * dose * (bin_mm / 1 mm) * (slice_thickness_mm / 1 mm) * (1000 / views):
   `incident_flux` is the full-dose fluence through 1 mm x 1 mm of detector (at the isocentre) per
   view, for 1000 views over 180 degrees. So the noise level does not depend on how finely the
   simulation samples angles, and thinner slices and smaller pixels are noisier, as on a scanner.
   N is clipped to at least 1 quantum (a dead reading) before the log.
4. The noise in projection space, log(I0 / N) - p, goes through filtered back-projection onto the
   input grid and is added to the input in HU. Filtered back-projection is linear, so this is the
   noisy reconstruction minus the noise-free one: the input keeps its own resolution and none of
   the discrete projector's blur or artefacts, and only the noise is simulated (with its FBP
   texture: a noise power spectrum that falls towards zero frequency).

Voxels below -1024 HU (scanners' padding outside the field of view) are left as they are.

`input_has_noise`: for a real full-dose scan acquired at `incident_flux`, whose own noise should count,
only the extra projection-space variance between full dose and `dose` is added, as Gaussian noise
((1/dose - 1)/N + sigma_e^2 (1/dose^2 - 1)/N^2 for N expected full-dose quanta), so that the result's
total noise is that of the lower dose (the approach of low-dose simulation from clinical scans).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from medgan.data.degradations.base import (
    Degradation,
    Param,
    as_batch_records,
    check_spacing,
    item_generator,
    restore_dtype,
    spatial_axis,
    spatial_shape_of,
    working_dtype,
)
from medgan.data.degradations.projector import WINDOWS, coarse_projection, detector_geometry, fbp, view_angles
from medgan.data.degradations.registry import DEGRADATIONS

__all__ = ["MU_WATER_PER_MM", "CTLowDose", "from_planes", "hu_to_mu", "plane_seed", "planes_of"]

MU_WATER_PER_MM = 0.0193  # liquid water at about 70 keV (NIST XCOM), 1/mm
REFERENCE_BIN_MM = 1.0  # incident_flux is quoted for bins this wide and slices this thick...
REFERENCE_VIEWS = 1000  # ...and this many views over 180 degrees
PADDING_HU = -1024.0  # values below this are a scanner's outside-the-field padding, kept as they are
PLANES_AT_ONCE = 16  # planes projected and reconstructed together: shares the sampling work, bounds memory


def hu_to_mu(hu: torch.Tensor, mu_water: float = MU_WATER_PER_MM) -> torch.Tensor:
    """Linear attenuation (1/mm) of HU values; below air clipped to 0."""
    return (mu_water * (1.0 + hu / 1000.0)).clamp(min=0.0)


def planes_of(x: torch.Tensor, slice_axis: int) -> tuple[torch.Tensor, tuple]:
    """`[B, C, *spatial]` -> planes `[B * C * K, H, W]` (K along `slice_axis` in 3D) and how to undo it."""
    if x.ndim == 4:
        return x.reshape(-1, *x.shape[2:]), ("2d", x.shape)
    moved = x.movedim(2 + slice_axis % 3, 2)  # [B, C, K, H, W]
    return moved.reshape(-1, *moved.shape[3:]), ("3d", moved.shape, slice_axis % 3)


def from_planes(planes: torch.Tensor, how: tuple) -> torch.Tensor:
    """The inverse of `planes_of`."""
    if how[0] == "2d":
        return planes.reshape(how[1])
    return planes.reshape(how[1]).movedim(2, 2 + how[2])


@DEGRADATIONS.register("ct-lowdose")
class CTLowDose(Degradation):
    """Low-dose CT: quantum and electronic noise of an acquisition at `dose` times the reference flux."""

    name = "ct-lowdose"
    params = (
        Param("dose", "", "dose fraction of the full-dose reference flux", low=0.001, high=1.0,
              mild=0.5, severe=0.05, log=True),
        Param("incident_flux", "quanta", "full-dose quanta per view through 1 mm x 1 mm of detector (1000 views)",
              low=1e2, high=1e8, default=1e5),
        Param("slice_thickness_mm", "mm", "reconstructed slice thickness (default: 3D, the slice spacing; 2D, 1 mm)",
              low=0.01, high=100.0, default=None),
        Param("electronic_noise_sd", "quanta", "detector read-out noise per bin and view",
              low=0.0, high=1e3, default=3.0),
        Param("views", "", "projection angles over 180 degrees", kind="int", low=16, high=4096, default=360),
        Param("filter", "", "ramp filter window", kind="choice", choices=WINDOWS, default="shepp-logan"),
        Param("slice_axis", "", "3D: the spatial axis across which planes are reconstructed", kind="int",
              low=-3, high=2, default=-1),
        Param("projection_coarsening", "", "expected counts from a projection this many times coarser", kind="int",
              low=1, high=4, default=2),
        Param("input_has_noise", "", "the input is a full-dose scan with its own noise: add only the extra noise",
              kind="bool", default=False),
    )  # fmt: skip

    def sample_extra(self, record: dict, generator: torch.Generator, spatial_dims: int, spacing_mm=None) -> dict:
        if record["slice_thickness_mm"] is not None:
            return {}
        across = spacing_mm is not None and spatial_dims == 3
        return {"slice_thickness_mm": float(spacing_mm[record["slice_axis"] % 3]) if across else 1.0}

    def apply(self, x: torch.Tensor, records: dict | Sequence[dict], spacing_mm: Sequence[float] | None = None):
        """Add low-dose CT noise to `x` in HU, `[B, C, *spatial]`; `spacing_mm` per spatial axis."""
        shape = spatial_shape_of(x, self.name)
        records = as_batch_records(records, x.shape[0], self.name)
        spacing = check_spacing(spacing_mm, len(shape), self.name)
        hu = x.to(working_dtype(x))
        noise = torch.zeros_like(hu)
        groups: dict[tuple, list[int]] = defaultdict(list)  # items that share one projection geometry
        for i, record in enumerate(records):
            key = (record["views"], record["filter"], record["slice_axis"], record["projection_coarsening"])
            groups[key].append(i)
        for (views, window, slice_axis, coarsening), items in groups.items():
            axis = spatial_axis(slice_axis, len(shape), self.name, "slice_axis") if len(shape) == 3 else None
            plane_spacing = tuple(s for a, s in enumerate(spacing) if len(shape) == 2 or a != axis)
            chosen = hu[items]
            planes, how = planes_of(chosen, slice_axis)
            settings = (views, window, coarsening)
            noise_planes = self._noise(planes, [records[i] for i in items], plane_spacing, *settings)
            noise[items] = from_planes(noise_planes, how)
        degraded = torch.where(hu < PADDING_HU, hu, hu + noise)
        return restore_dtype(degraded, x)

    def _noise(self, planes, records: list[dict], spacing, views: int, window: str, coarsening: int) -> torch.Tensor:
        """Noise in HU for planes `[items * per_item, H, W]`, in chunks of planes (bounded memory). Plane k of an
        item draws from its own generator (the item's seed and k), so chunking and batching never change it."""
        height, width = planes.shape[-2:]
        _, bin_mm = detector_geometry((height, width), spacing)
        angles = view_angles(views, device=planes.device, dtype=planes.dtype)
        per_item = planes.shape[0] // len(records)
        noise = torch.empty_like(planes)
        for start in range(0, planes.shape[0], PLANES_AT_ONCE):
            chunk = planes[start : start + PLANES_AT_ONCE]
            line_integrals = coarse_projection(hu_to_mu(chunk), views, spacing, coarsening)
            deltas = torch.empty_like(line_integrals)
            for offset, p in enumerate(line_integrals):
                item, k = divmod(start + offset, per_item)
                deltas[offset] = self._log_noise(p, records[item], k, bin_mm, views)
            mu_noise = fbp(deltas, angles, (height, width), spacing, bin_mm, window)
            noise[start : start + PLANES_AT_ONCE] = mu_noise * (1000.0 / MU_WATER_PER_MM)
        return noise

    @staticmethod
    def _log_noise(p: torch.Tensor, record: dict, plane: int, bin_mm: float, views: int) -> torch.Tensor:
        """log(I0 / N) - p for one plane's line integrals `[views, bins]`."""
        generator = item_generator(plane_seed(record["noise_seed"], plane), p.device)
        area = (bin_mm / REFERENCE_BIN_MM) * ((record["slice_thickness_mm"] or 1.0) / REFERENCE_BIN_MM)
        full = record["incident_flux"] * area * (REFERENCE_VIEWS / views)
        if record.get("input_has_noise"):
            # The scan already carries full-dose noise: add the variance that separates it from the lower dose,
            # Var(log) ~ 1/N + se^2/N^2 for N expected quanta, Gaussian (good for more than a few quanta).
            expected, dose, electronic = full * torch.exp(-p), record["dose"], record["electronic_noise_sd"]
            extra = (1 / dose - 1) / expected + electronic**2 * (1 / dose**2 - 1) / expected**2
            return extra.sqrt() * torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
        flux = full * record["dose"]
        counts = torch.poisson(flux * torch.exp(-p), generator=generator)
        if record["electronic_noise_sd"] > 0:
            counts = counts + record["electronic_noise_sd"] * torch.randn(
                counts.shape, generator=generator, device=counts.device, dtype=counts.dtype
            )
        return torch.log(flux / counts.clamp(min=1.0)) - p


def plane_seed(noise_seed: int, plane: int) -> int:
    """The seed of plane `plane` of an item: distinct for every plane, fixed by the record."""
    return (int(noise_seed) * 1_000_003 + plane) % 2**63
