"""The lesion record: every parameter of one simulated lesion, sampled first, rendered from later.

`medgan.lesions.models` samples a `LesionRecord` from a seed; `medgan.lesions.insert` renders it
deterministically. A record round-trips through JSON exactly (Python floats print their shortest
exact form), so replaying a saved record gives the identical image. Units are in the names:
`_mm` millimetres in the patient, `_voxel` indices on the scan's grid, contrasts in `units`
("HU" or the image's own units for an absolute offset, "relative" for a fraction of the
surrounding tissue's mean intensity).

What rendering reads: `voxel`, `label`, `lesion_seed`, `renderer`, `shape`, `compartments`,
`intensity`, `scan` and `mass_effect`. What it writes back for the user: `centre_mm`,
`centre_voxel`, `rendered` (the tissue contrast solved for, the surroundings' mean) and `measured`
(volume, diameters, contrast measured in the output).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from medgan.errors import InputError

__all__ = [
    "RECORD_FORMAT",
    "RECORD_VERSION",
    "Compartments",
    "Intensity",
    "LesionRecord",
    "MassEffect",
    "ScanParams",
    "ShapeParams",
    "record_from_dict",
]

RECORD_FORMAT = "medgan-lesions"
RECORD_VERSION = 1


@dataclass
class ShapeParams:
    """The lesion's geometry, in the lesion's own frame (its principal axes)."""

    diameter_mm: float  # requested volume-equivalent diameter
    axes_mm: list[float]  # semi-axes of the base ellipsoid, after scaling to the requested volume
    rotation: list[list[float]]  # 3x3; column n is lesion axis n as a RAS unit vector
    lobulation: float = 0.0  # rms radial deformation, fraction of the local radius
    lobe_kappa: float = 4.0  # concentration of each lobe on the sphere (higher: narrower lobes)
    lobes: list[list[float]] = field(default_factory=list)  # [dx, dy, dz, weight] per lobe, lesion frame
    spicule_kappa: float = 400.0  # concentration of each spicule (higher: thinner)
    spicules: list[list[float]] = field(default_factory=list)  # [dx, dy, dz, length], length in local radii
    subvoxel: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # centre minus its voxel, voxels


@dataclass
class Compartments:
    """Structures inside and around the lesion (0 or empty: absent)."""

    rim_mm: float = 0.0  # thickness of an enhancing rim under the surface
    core_fraction: float = 0.0  # a necrotic core out to this fraction of the radius
    calcifications: list[list[float]] = field(default_factory=list)  # [x, y, z, radius_mm]; x, y, z in radii
    halo_mm: float = 0.0  # oedema around the lesion, fading out over this distance


@dataclass
class Intensity:
    """Contrasts (in `units`) and texture of the lesion."""

    contrast: float  # mean of the lesion's label mask minus the surroundings' mean
    units: str = "HU"  # "HU", "absolute" (the image's own units) or "relative" (fraction of the surroundings)
    rim_contrast: float = 0.0  # added in the rim
    core_contrast: float = 0.0  # added in the core
    calcification_contrast: float = 0.0  # added in calcifications
    halo_contrast: float = 0.0  # at the lesion's surface, fading to 0 at the halo's edge
    texture_sd: float = 0.0  # sd of the lesion's own heterogeneity
    texture_corr_mm: float = 2.0  # its correlation length (Gaussian sd)
    border_mm: float = 0.5  # the border's own softness (Gaussian sd), on top of the scanner's blur


@dataclass
class ScanParams:
    """What was measured in the scan around the lesion before it was inserted."""

    noise_sd: float  # image units
    noise_corr_mm: list[float]  # Gaussian correlation length per axis
    blur_sigma_mm: list[float]  # scanner point-spread sd per axis
    blur_edges: list[int] = field(default_factory=lambda: [0, 0, 0])  # edges that blur was fitted on


@dataclass
class MassEffect:
    strength: float  # 0: infiltrative (no push) .. 1: pushes aside the tissue of its whole volume
    reach_mm: float  # displacement fades to zero at this distance from the centre


@dataclass
class LesionRecord:
    """One lesion: parameters, the seed of its texture, and what was measured after rendering."""

    index: int  # 1, 2, ... in the order lesions were inserted
    label: int  # its value in the label map
    seed: int  # the run's seed: lesion `index` was drawn from numpy.random.default_rng([seed, index])
    lesion_seed: int  # seeds the texture noise
    preset: str  # the lesion model preset it was sampled from
    renderer: str  # the content renderer ("procedural")
    voxel: list[int]  # the voxel the centre lies in
    shape: ShapeParams
    compartments: Compartments
    intensity: Intensity
    scan: ScanParams
    mass_effect: MassEffect | None = None
    margin_mm: float = 2.0  # placement: the lesion stays this far inside the organ's border
    gap_mm: float = 2.0  # placement: this far from any other lesion's footprint
    centre_voxel: list[float] = field(default_factory=list)  # reported: voxel + subvoxel
    centre_mm: list[float] = field(default_factory=list)  # reported: RAS position of the centre
    rendered: dict[str, Any] = field(default_factory=dict)  # reported: tissue contrast, surroundings
    measured: dict[str, Any] = field(default_factory=dict)  # reported: measured in the output

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_PARTS = {"shape": ShapeParams, "compartments": Compartments, "intensity": Intensity, "scan": ScanParams}


def record_from_dict(data: dict[str, Any], path: str | None = None) -> LesionRecord:
    """A `LesionRecord` from its JSON form; a missing or unknown key is an `InputError` naming it."""
    try:
        values = dict(data)
        for key, kind in _PARTS.items():
            values[key] = _build(kind, values[key], key)
        if values.get("mass_effect") is not None:
            values["mass_effect"] = _build(MassEffect, values["mass_effect"], "mass_effect")
        return _build(LesionRecord, values, "lesion")
    except KeyError as err:
        raise InputError(f"lesion record lacks {err.args[0]!r}; replay a file written by medgan", path=path) from None
    except (TypeError, ValueError) as err:
        raise InputError(f"malformed lesion record: {err}", path=path) from None


def _build(kind: type, values: Any, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"{where} should be an object")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in {where}")
    required = [f.name for f in dataclasses.fields(kind)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]  # fmt: skip
    for name in required:
        if name not in values:
            raise KeyError(f"{where}.{name}")
    return kind(**values)
