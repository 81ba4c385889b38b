"""Lesion model presets: parameter ranges for kinds of lesion, and sampling a record's parameters from them.

    from medgan.lesions.models import LESION_MODELS
    model = LESION_MODELS.build("ct-liver-hypo")                  # a LesionModel
    model = LESION_MODELS.build("ct-liver-hypo", contrast=(-40, -40))   # any range overridden

A range `(lo, hi)` is sampled uniformly (equal ends give that value); an optional part (rim, core,
calcifications, halo, spicules, mass effect) is present with its probability. Units: mm for sizes,
contrasts in the preset's `units` ("HU", "absolute" or "relative" to the surroundings' mean;
None: HU for CT, relative otherwise; a preset without a contrast range takes DEFAULT_CONTRAST's for
its units), spicule lengths in lesion radii.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from medgan.errors import ConfigError
from medgan.lesions.record import Compartments, Intensity, MassEffect, ShapeParams
from medgan.lesions.shapes import volume_scale
from medgan.registry import Registry

__all__ = ["LESION_MODELS", "LesionModel", "equal_volume_min_radius", "random_rotation", "sample_parameters",
           "units_for"]  # fmt: skip

Range = tuple[float, float]


@dataclass(frozen=True)
class LesionModel:
    """Ranges and probabilities of every lesion parameter (see the module docstring for units)."""

    name: str = "generic"
    description: str = "ellipsoid with mild lobulation; contrast as asked"
    units: str | None = None  # None: HU for CT, relative for other modalities
    diameter_mm: Range = (5.0, 30.0)  # volume-equivalent diameter
    contrast: Range | None = None  # mean over the label mask minus the surroundings; None: by the units
    axis_ratio: Range = (0.7, 1.0)  # each minor semi-axis over the major one
    lobulation: Range = (0.0, 0.1)  # rms radial deformation, fraction of the radius
    lobes: tuple[int, int] = (2, 6)
    lobe_kappa: Range = (2.0, 8.0)  # lobe concentration (higher: narrower lobes)
    spiculation_probability: float = 0.0
    spicules: tuple[int, int] = (3, 10)
    spicule_length: Range = (0.3, 1.0)  # in lesion radii
    spicule_kappa: Range = (150.0, 600.0)
    rim_probability: float = 0.0
    rim_mm: Range = (1.0, 3.0)
    rim_contrast: Range = (0.0, 0.0)
    core_probability: float = 0.0
    core_fraction: Range = (0.3, 0.6)
    core_contrast: Range = (0.0, 0.0)
    calcification_probability: float = 0.0
    calcifications: tuple[int, int] = (1, 3)
    calcification_mm: Range = (0.5, 1.5)  # radius
    calcification_contrast: Range = (0.0, 0.0)
    halo_probability: float = 0.0
    halo_mm: Range = (3.0, 10.0)
    halo_contrast: Range = (0.0, 0.0)
    texture_sd: Range = (0.0, 0.0)  # the lesion's own heterogeneity, contrast units
    texture_corr_mm: Range = (1.5, 3.0)
    border_mm: Range = (0.3, 1.0)  # the border's own softness (sd) beyond the scanner's blur
    mass_effect_probability: float = 0.0
    mass_effect: Range = (0.3, 0.8)  # strength: the fraction of the lesion's volume pushed aside

    def with_ranges(self, **ranges) -> LesionModel:
        """A copy with some ranges replaced (None values are ignored); checks every range."""
        changes = {k: tuple(float(x) for x in v) if isinstance(v, list | tuple) else v
                   for k, v in ranges.items() if v is not None}  # fmt: skip
        model = dataclasses.replace(self, **changes)
        model.check()
        return model

    def check(self) -> None:
        if self.units not in (None, "HU", "absolute", "relative"):
            raise ConfigError(f"lesion model {self.name}: units {self.units!r} is not HU, absolute or relative")
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, tuple) and len(value) == 2 and value[0] > value[1]:
                raise ConfigError(f"lesion model {self.name}: {item.name} range {value[0]:g}:{value[1]:g} is reversed")
        if self.diameter_mm[0] <= 0:
            raise ConfigError(f"lesion model {self.name}: diameters must be positive, got {self.diameter_mm[0]:g} mm")
        if not 0 < self.axis_ratio[0] <= self.axis_ratio[1] <= 1:
            raise ConfigError(f"lesion model {self.name}: axis ratios lie in (0, 1], got {self.axis_ratio}")


LESION_MODELS: Registry = Registry("lesion model")


@LESION_MODELS.register("generic")
def generic(**ranges) -> LesionModel:
    """Ellipsoid, mild lobulation, scan-matched noise texture; no rim, core or halo."""
    return LesionModel().with_ranges(**ranges)


@LESION_MODELS.register("ct-liver-hypo")
def ct_liver_hypo(**ranges) -> LesionModel:
    """Hypo-attenuating liver lesion (metastasis-like) on portal venous CT."""
    model = LesionModel(name="ct-liver-hypo", description="hypo-attenuating liver lesion, CT", units="HU",
                        diameter_mm=(5.0, 30.0), contrast=(-60.0, -20.0), lobulation=(0.0, 0.12),
                        rim_probability=0.3, rim_mm=(1.0, 3.0), rim_contrast=(10.0, 30.0),
                        core_probability=0.2, core_fraction=(0.3, 0.6), core_contrast=(-25.0, -5.0),
                        texture_sd=(4.0, 12.0), texture_corr_mm=(2.0, 4.0), border_mm=(0.3, 1.0))  # fmt: skip
    return model.with_ranges(**ranges)


@LESION_MODELS.register("ct-lung-nodule")
def ct_lung_nodule(**ranges) -> LesionModel:
    """Solid lung nodule: soft tissue against aerated lung, lobulated, sometimes spiculated or calcified."""
    model = LesionModel(name="ct-lung-nodule", description="solid lung nodule, CT", units="HU",
                        diameter_mm=(4.0, 30.0), contrast=(650.0, 850.0), axis_ratio=(0.75, 1.0),
                        lobulation=(0.03, 0.2), spiculation_probability=0.4, spicules=(4, 12),
                        spicule_length=(0.3, 0.9), calcification_probability=0.1,
                        calcification_contrast=(300.0, 800.0), texture_sd=(15.0, 40.0),
                        texture_corr_mm=(1.0, 2.5), border_mm=(0.0, 0.4))  # fmt: skip
    return model.with_ranges(**ranges)


@LESION_MODELS.register("mr-brain-enhancing")
def mr_brain_enhancing(**ranges) -> LesionModel:
    """Contrast-enhancing brain tumour on post-contrast T1 MR: rim, necrotic core, oedema, mass effect."""
    model = LesionModel(name="mr-brain-enhancing", description="enhancing brain tumour, T1 post-contrast MR",
                        units="relative", diameter_mm=(8.0, 40.0), contrast=(0.2, 0.6), lobulation=(0.03, 0.15),
                        rim_probability=0.7, rim_mm=(1.5, 4.0), rim_contrast=(0.1, 0.3),
                        core_probability=0.5, core_fraction=(0.3, 0.6), core_contrast=(-0.4, -0.15),
                        halo_probability=0.6, halo_mm=(3.0, 10.0), halo_contrast=(-0.15, -0.05),
                        texture_sd=(0.1, 0.25), texture_corr_mm=(0.4, 1.2), border_mm=(0.0, 0.6),
                        mass_effect_probability=0.5, mass_effect=(0.3, 0.8))  # fmt: skip
    return model.with_ranges(**ranges)


DEFAULT_CONTRAST = {"HU": (-60.0, -20.0), "absolute": (-60.0, -20.0), "relative": (-0.3, -0.1)}


def units_for(model: LesionModel, modality: str) -> str:
    """The contrast units of `model` on an image of `modality`."""
    if model.units is not None:
        return model.units
    return "HU" if modality.upper() == "CT" else "relative"


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation (QR of a Gaussian matrix with the signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _uniform(rng: np.random.Generator, bounds) -> float:
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo if lo == hi else float(rng.uniform(lo, hi))


def _count(rng: np.random.Generator, bounds) -> int:
    return int(rng.integers(int(bounds[0]), int(bounds[1]) + 1))


def sample_parameters(model: LesionModel, rng: np.random.Generator, units: str):
    """(shape, compartments, intensity, mass effect or None) drawn from `model`; the axes are scaled to the
    sampled volume-equivalent diameter."""
    diameter = _uniform(rng, model.diameter_mm)
    ratios = sorted([_uniform(rng, model.axis_ratio), _uniform(rng, model.axis_ratio)], reverse=True)
    n_lobes = _count(rng, model.lobes)
    weights = rng.standard_normal(n_lobes)
    lobes = [[*v, float(w)] for v, w in zip(_unit_vectors(rng, n_lobes).tolist(), weights, strict=True)]
    spicules = []
    if rng.random() < model.spiculation_probability:
        n = _count(rng, model.spicules)
        spicules = [[*v, _uniform(rng, model.spicule_length)] for v in _unit_vectors(rng, n).tolist()]
    shape = ShapeParams(
        diameter_mm=diameter, axes_mm=[1.0, ratios[0], ratios[1]], rotation=random_rotation(rng).tolist(),
        lobulation=_uniform(rng, model.lobulation), lobe_kappa=_uniform(rng, model.lobe_kappa), lobes=lobes,
        spicule_kappa=_uniform(rng, model.spicule_kappa), spicules=spicules,
        subvoxel=[float(x) for x in rng.uniform(-0.5, 0.5, 3)],
    )  # fmt: skip
    scale = volume_scale(shape)
    shape.axes_mm = [a * scale for a in shape.axes_mm]
    rim = rng.random() < model.rim_probability
    core = rng.random() < model.core_probability
    halo = rng.random() < model.halo_probability
    calcifications = []
    if rng.random() < model.calcification_probability:
        for _ in range(_count(rng, model.calcifications)):
            where = _unit_vectors(rng, 1)[0] * rng.uniform(0.0, 0.6) ** (1 / 3)
            calcifications.append([*where.tolist(), _uniform(rng, model.calcification_mm)])
    compartments = Compartments(
        rim_mm=_uniform(rng, model.rim_mm) if rim else 0.0,
        core_fraction=_uniform(rng, model.core_fraction) if core else 0.0,
        calcifications=calcifications,
        halo_mm=_uniform(rng, model.halo_mm) if halo else 0.0,
    )
    intensity = Intensity(
        contrast=_uniform(rng, model.contrast or DEFAULT_CONTRAST[units]), units=units,
        rim_contrast=_uniform(rng, model.rim_contrast) if rim else 0.0,
        core_contrast=_uniform(rng, model.core_contrast) if core else 0.0,
        calcification_contrast=_uniform(rng, model.calcification_contrast) if calcifications else 0.0,
        halo_contrast=_uniform(rng, model.halo_contrast) if halo else 0.0,
        texture_sd=_uniform(rng, model.texture_sd), texture_corr_mm=_uniform(rng, model.texture_corr_mm),
        border_mm=_uniform(rng, model.border_mm),
    )  # fmt: skip
    mass = None
    if rng.random() < model.mass_effect_probability:
        mass = MassEffect(strength=_uniform(rng, model.mass_effect), reach_mm=1.5 * diameter)
    return shape, compartments, intensity, mass


def equal_volume_min_radius(diameter_mm: float, ratio: float) -> float:
    """The smallest semi-axis of an ellipsoid (a, ratio a, ratio a) with the volume of a `diameter_mm` sphere."""
    return diameter_mm / 2 * ratio ** (1 / 3)
