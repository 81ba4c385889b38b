"""Procedural phantoms in physical units: CT-like bodies and heads (HU), T1-weighted MR brains.

    from medgan.data.phantoms import PHANTOMS, render_phantom
    ct = PHANTOMS.build("ct_body", spatial_dims=3, seed=7)     # MetaTensor [1, 128, 128, 48], int16 HU
    again = render_phantom(ct.meta["phantom_params"])          # the same voxels, from the record alone

Every builder first draws a small parameter record from its seed (sizes, shifts, tissue
values, noise and texture seeds; TorchIO's RandomNoise -> Noise split), then
`render_phantom(record)` draws the image from the record alone, deterministically. The record
is kept in `meta["phantom_params"]`, so any phantom can be replayed or varied by hand.

Outputs:
- CT (`ct_body`, `ct_head`): int16 Hounsfield units, clipped to [-1024, 3071] like a scanner,
  with Gaussian noise of `noise_sd` HU.
- MR (`mr_brain`): int16 arbitrary units (white matter about 640, background about 0), as a
  scanner stores magnitude images, with Rician noise (Gaussian of `noise_sd` in the real and
  imaginary channels) and an optional smooth multiplicative bias field.

2D phantoms cut the same anatomy at the axial plane z = 0 (same code, `spatial_dims=2`); the
smooth random fields (texture, bowel, cortical folding) are drawn afresh on the 2D grid.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from monai.data import MetaTensor
from pydantic import Field, ValidationInfo, field_validator

from medgan.config import Section
from medgan.data.phantom_anatomy import (
    BODY_TISSUES,
    HEAD_TISSUES,
    body_labels,
    head_labels,
    sample_body_anatomy,
    sample_head_anatomy,
)
from medgan.data.phantom_shapes import Grid, gaussian_blur, smooth_field
from medgan.errors import ConfigError
from medgan.io.image import make_image
from medgan.registry import Registry

__all__ = [
    "CT_BODY_HU",
    "CT_HEAD_HU",
    "MR_T1_VALUES",
    "PHANTOMS",
    "PhantomConfig",
    "Seed",
    "ct_body",
    "ct_head",
    "make_phantom",
    "mr_brain",
    "phantom_labels",
    "render_phantom",
    "write_phantom",
]

Seed = int | np.random.Generator | torch.Generator
PHANTOMS: Registry = Registry("phantom")

# Mean tissue values; each phantom draws its own within +-spread (second number).
CT_BODY_HU = {
    "air": (-1000, 0), "fat": (-100, 8), "muscle": (50, 5), "soft_tissue": (40, 5), "lung": (-850, 20),
    "heart": (45, 5), "blood": (180, 20), "liver": (60, 5), "portal_vein": (150, 20), "spleen": (45, 5),
    "stomach": (20, 5), "gas": (-950, 20), "kidney": (30, 5), "aorta": (200, 20), "ivc": (130, 20),
    "cortical_bone": (1100, 80), "cancellous_bone": (300, 40), "disc": (80, 10), "spinal_canal": (20, 5),
    "rib": (700, 60),
}  # fmt: skip
CT_HEAD_HU = {
    "air": (-1000, 0), "skin": (30, 5), "fat": (-90, 8), "cortical_bone": (1400, 100), "diploe": (600, 60),
    "csf": (8, 3), "grey_matter": (38, 2), "white_matter": (27, 2), "deep_grey": (35, 2),
}  # fmt: skip
MR_T1_VALUES = {  # T1-weighted: fat and white matter bright, CSF and bone dark (arbitrary units)
    "air": (0, 0), "skin": (300, 20), "fat": (950, 40), "cortical_bone": (30, 10), "diploe": (500, 40),
    "csf": (120, 15), "grey_matter": (430, 15), "white_matter": (640, 20), "deep_grey": (480, 15),
}  # fmt: skip

_KINDS = {  # kind: (layout, modality, units, description)
    "ct_body": ("body", "CT", "HU", "CT-like abdomen and lower thorax"),
    "ct_head": ("head", "CT", "HU", "CT-like head"),
    "mr_brain": ("head", "MR", "a.u.", "T1-weighted MR-like head"),
}
_NO_TEXTURE = ("air", "gas")  # homogeneous gas shows only noise
_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def _rng(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=seed)))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ConfigError(f"seed must be an int, numpy Generator or torch Generator, got {type(seed).__name__}")
    return np.random.default_rng(int(seed))


def _grid(spatial_dims: int, shape, spacing_mm, default_shape, default_spacing_mm) -> Grid:
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    shape = tuple(int(n) for n in (shape if shape is not None else default_shape[:spatial_dims]))
    spacing = tuple(float(s) for s in (spacing_mm if spacing_mm is not None else default_spacing_mm[:spatial_dims]))
    if len(shape) != spatial_dims or len(spacing) != spatial_dims:
        raise ConfigError(f"shape {list(shape)} and spacing_mm {list(spacing)} need {spatial_dims} values each")
    if min(shape[:2]) < 8 or min(shape) < 1:
        raise ConfigError(f"shape {list(shape)}: the in-plane axes need at least 8 voxels, the slice axis 1")
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ConfigError(f"spacing_mm {list(spacing)}: voxel sizes must be positive")
    return Grid(shape, spacing)


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if not (np.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")


def _sample_values(rng: np.random.Generator, table: Mapping[str, tuple[float, float]], variation: float) -> dict:
    """Each tissue's value for this phantom: its mean plus a uniform draw within +-spread * variation."""
    values = {}
    for name, (mean, spread) in table.items():
        values[name] = round(float(mean + rng.uniform(-spread, spread) * variation), 1)
    return values


def _record(kind: str, seed: Seed, grid: Grid, **fields: Any) -> dict:
    return {
        "kind": kind,
        "seed": int(seed) if isinstance(seed, int | np.integer) else None,  # informative only; never read back
        "spatial_dims": grid.spatial_dims,
        "shape": list(grid.shape),
        "spacing_mm": list(grid.spacing_mm),
        **fields,
    }


@PHANTOMS.register("ct_body")
def ct_body(
    spatial_dims: int = 3,  # 2: the axial plane z = 0; 3: a volume
    shape: Sequence[int] | None = None,  # voxels per axis; default (128, 128, 48), its first two in 2D
    spacing_mm: Sequence[float] | None = None,  # voxel size (mm); default (2.0, 2.0, 3.0)
    seed: Seed = 0,  # draws the parameter record (anatomy, tissue HU, noise and texture seeds)
    noise_sd: float = 15.0,  # Gaussian noise (HU)
    texture_sd: float = 6.0,  # smooth tissue texture (HU); 0 turns it off
    blur_fwhm_mm: float = 1.5,  # scanner point spread (mm), gives partial volume at edges
    body_width_mm: float | None = None,  # left-right body width (mm); default 85% of the field of view
    variation: float = 1.0,  # scale of the random anatomy and HU variation; 0 gives the mean phantom
) -> MetaTensor:
    """CT-like upper abdomen and lung bases (3D adds heart, kidneys, discs): int16 HU."""
    _check_non_negative(noise_sd=noise_sd, texture_sd=texture_sd, blur_fwhm_mm=blur_fwhm_mm, variation=variation)
    grid = _grid(spatial_dims, shape, spacing_mm, (128, 128, 48), (2.0, 2.0, 3.0))
    rng = _rng(seed)
    record = _record(
        "ct_body", seed, grid, noise_sd=float(noise_sd), texture_sd=float(texture_sd),
        blur_fwhm_mm=float(blur_fwhm_mm), width_mm=round(float(body_width_mm or 0.85 * grid.fov_mm[0]), 3),
        anatomy=sample_body_anatomy(rng, variation), values=_sample_values(rng, CT_BODY_HU, variation),
        texture_seed=int(rng.integers(2**31)), noise_seed=int(rng.integers(2**31)),
    )  # fmt: skip
    return render_phantom(record)


def _head_record(kind, spatial_dims, shape, spacing_mm, seed, table, variation, head_width_mm, **fields) -> dict:
    grid = _grid(spatial_dims, shape, spacing_mm, (128, 128, 64), (1.8, 1.8, 2.5))
    rng = _rng(seed)
    return _record(
        kind, seed, grid, **fields, width_mm=round(float(head_width_mm or 0.68 * grid.fov_mm[0]), 3),
        anatomy=sample_head_anatomy(rng, variation), values=_sample_values(rng, table, variation),
        texture_seed=int(rng.integers(2**31)), noise_seed=int(rng.integers(2**31)),
        bias_seed=int(rng.integers(2**31)),
    )  # fmt: skip


@PHANTOMS.register("ct_head")
def ct_head(
    spatial_dims: int = 3,  # 2: the axial plane through the ventricles; 3: a volume
    shape: Sequence[int] | None = None,  # voxels per axis; default (128, 128, 64), its first two in 2D
    spacing_mm: Sequence[float] | None = None,  # voxel size (mm); default (1.8, 1.8, 2.5)
    seed: Seed = 0,  # draws the parameter record
    noise_sd: float = 5.0,  # Gaussian noise (HU)
    texture_sd: float = 2.0,  # smooth tissue texture (HU); 0 turns it off
    blur_fwhm_mm: float = 1.2,  # scanner point spread (mm)
    head_width_mm: float | None = None,  # left-right head width (mm); default 68% of the field of view
    variation: float = 1.0,  # scale of the random anatomy and HU variation; 0 gives the mean phantom
) -> MetaTensor:
    """CT-like head (scalp, skull with diploe, CSF, grey/white matter, ventricles): int16 HU."""
    _check_non_negative(noise_sd=noise_sd, texture_sd=texture_sd, blur_fwhm_mm=blur_fwhm_mm, variation=variation)
    record = _head_record(
        "ct_head", spatial_dims, shape, spacing_mm, seed, CT_HEAD_HU, variation, head_width_mm,
        noise_sd=float(noise_sd), texture_sd=float(texture_sd), blur_fwhm_mm=float(blur_fwhm_mm), bias_field=0.0,
    )  # fmt: skip
    return render_phantom(record)


@PHANTOMS.register("mr_brain")
def mr_brain(
    spatial_dims: int = 3,  # 2: the axial plane through the ventricles; 3: a volume
    shape: Sequence[int] | None = None,  # voxels per axis; default (128, 128, 64), its first two in 2D
    spacing_mm: Sequence[float] | None = None,  # voxel size (mm); default (1.8, 1.8, 2.5)
    seed: Seed = 0,  # draws the parameter record
    noise_sd: float = 12.0,  # Rician noise: Gaussian sd in each of the real and imaginary channels (a.u.)
    texture_sd: float = 10.0,  # smooth tissue texture (a.u.); 0 turns it off
    blur_fwhm_mm: float = 1.2,  # point spread (mm)
    bias_field: float = 0.15,  # coil-sensitivity bias: log-amplitude per unit sd of a smooth field; 0 is off
    head_width_mm: float | None = None,  # left-right head width (mm); default 68% of the field of view
    variation: float = 1.0,  # scale of the random anatomy and intensity variation; 0 gives the mean phantom
) -> MetaTensor:
    """T1-weighted MR-like head (WM > GM > CSF, bright scalp fat, dark bone): int16 a.u."""
    _check_non_negative(
        noise_sd=noise_sd, texture_sd=texture_sd, blur_fwhm_mm=blur_fwhm_mm, bias_field=bias_field, variation=variation
    )
    record = _head_record(
        "mr_brain", spatial_dims, shape, spacing_mm, seed, MR_T1_VALUES, variation, head_width_mm,
        noise_sd=float(noise_sd), texture_sd=float(texture_sd), blur_fwhm_mm=float(blur_fwhm_mm),
        bias_field=float(bias_field),
    )  # fmt: skip
    return render_phantom(record)


def phantom_labels(params: Mapping[str, Any]) -> tuple[np.ndarray, tuple[str, ...]]:
    """The tissue label map of a parameter record, and the tissue name of each label value."""
    kind = params["kind"]
    if kind not in _KINDS:
        raise ConfigError(PHANTOMS.unknown_message(kind))
    grid = Grid(tuple(params["shape"]), tuple(params["spacing_mm"]))
    if _KINDS[kind][0] == "body":
        return body_labels(grid, params["anatomy"], params["width_mm"]), BODY_TISSUES
    return head_labels(grid, params["anatomy"], params["width_mm"]), HEAD_TISSUES


def render_phantom(params: Mapping[str, Any]) -> MetaTensor:
    """Draw the phantom a parameter record describes (deterministic: same record, same voxels)."""
    labels, tissues = phantom_labels(params)
    kind = params["kind"]
    _, modality, units, description = _KINDS[kind]
    grid = Grid(tuple(params["shape"]), tuple(params["spacing_mm"]))
    image = _tissue_image(labels, tissues, grid, params)
    noise = np.random.default_rng(params["noise_seed"])
    if modality == "CT":
        image += noise.standard_normal(grid.shape) * params["noise_sd"]
        voxels = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    else:
        if params["bias_field"]:
            image *= np.exp(params["bias_field"] * smooth_field(grid, params["bias_seed"], scale_mm=80.0))
        # Magnitude of a complex signal with Gaussian noise in both channels: Rician, Rayleigh where no signal.
        real = image + noise.standard_normal(grid.shape) * params["noise_sd"]
        imaginary = noise.standard_normal(grid.shape) * params["noise_sd"]
        voxels = np.clip(np.rint(np.hypot(real, imaginary)), 0, 32767).astype(np.int16)
    seed = f", seed {params['seed']}" if params.get("seed") is not None else ""
    meta = {
        "modality": modality,
        "units": units,
        "synthetic": True,
        "description": f"medgan phantom {kind} ({description}, {grid.spatial_dims}D{seed})",
        "phantom_params": _plain(params),
    }
    return make_image(voxels[np.newaxis], grid.affine(), meta)


def _tissue_image(labels: np.ndarray, tissues: Sequence[str], grid: Grid, params: Mapping[str, Any]) -> np.ndarray:
    """Per-tissue values plus smooth texture, blurred by the point spread (float64, for exact rounding)."""
    table = np.array([params["values"][name] for name in tissues], dtype=np.float64)
    image = table[labels]
    if params["texture_sd"]:
        textured = ~np.isin(labels, [tissues.index(name) for name in _NO_TEXTURE if name in tissues])
        image += textured * (params["texture_sd"] * smooth_field(grid, params["texture_seed"], scale_mm=12.0))
    if params["blur_fwhm_mm"]:
        sigma_mm = params["blur_fwhm_mm"] * _FWHM_TO_SIGMA
        image = gaussian_blur(image, [sigma_mm / s for s in grid.spacing_mm])
    return image


def _plain(value: Any) -> Any:
    """A deep copy made of dicts, lists and Python scalars (JSON- and YAML-safe)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


_COMMON = ("spatial_dims", "shape", "spacing_mm", "seed", "noise_sd")


class PhantomConfig(Section):
    """What `medgan phantom` draws. `options` holds the chosen kind's other keyword arguments."""

    kind: str = "ct_body"  # a name in PHANTOMS
    spatial_dims: Literal[2, 3] = 3
    shape: list[int] | None = None  # voxels per axis; None: the phantom's default
    spacing_mm: list[float] | None = None  # voxel size (mm); None: the phantom's default
    seed: int = 0
    noise_sd: float | None = Field(default=None, ge=0)  # HU for CT, a.u. for MR; None: the phantom's default
    options: dict[str, float | None] = Field(default_factory=dict)  # e.g. texture_sd, blur_fwhm_mm, bias_field

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in PHANTOMS:
            raise ValueError(PHANTOMS.unknown_message(kind))
        return kind

    @field_validator("shape", "spacing_mm")
    @classmethod
    def _one_per_axis(cls, values: list | None, info: ValidationInfo) -> list | None:
        dims = info.data.get("spatial_dims")
        if values is not None and dims is not None and len(values) != dims:
            raise ValueError(f"needs {dims} values for spatial_dims {dims}")
        if values is not None and info.field_name == "shape" and (min(values[:2]) < 8 or min(values) < 1):
            raise ValueError("the in-plane axes need at least 8 voxels, the slice axis 1")
        if values is not None and info.field_name == "spacing_mm" and min(values) <= 0:
            raise ValueError("voxel sizes must be positive")
        return values

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict, info: ValidationInfo) -> dict:
        kind = info.data.get("kind")
        if kind is None:  # the kind itself was wrong; that error is reported instead
            return options
        valid = [name for name in inspect.signature(PHANTOMS.get(kind)).parameters if name not in _COMMON]
        for key in options:
            if key not in valid:
                raise ValueError(f"unknown option {key!r} for phantom {kind!r} (valid: {', '.join(valid)})")
        return options


def make_phantom(cfg: PhantomConfig) -> MetaTensor:
    """Build the phantom a config describes."""
    kwargs: dict[str, Any] = {"spatial_dims": cfg.spatial_dims, "seed": cfg.seed, **cfg.options}
    for key in ("shape", "spacing_mm", "noise_sd"):
        if getattr(cfg, key) is not None:
            kwargs[key] = getattr(cfg, key)
    return PHANTOMS.build(cfg.kind, **kwargs)


def write_phantom(
    cfg: PhantomConfig,
    out_path: str | os.PathLike,
    to: str | None = None,  # None: by suffix (.nii.gz, .nrrd, .mha); "dicom": a series folder
    overwrite: bool = False,
) -> str:
    """Build the phantom and write it (a DICOM series is marked SyntheticData YES); returns the path."""
    from medgan.io import write_image

    return write_image(make_phantom(cfg), out_path, to=to, overwrite=overwrite)
