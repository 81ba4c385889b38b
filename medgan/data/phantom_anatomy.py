"""Anatomy of the procedural phantoms: what is where, as a label map.

Two layouts: an upper-abdomen/lower-thorax body (`BODY_TISSUES`) and a head
(`HEAD_TISSUES`, shared by the CT head and the T1 MR brain). `sample_*_anatomy` draws the
small random part (sizes, shifts, a few positions) into a plain dict of numbers; `*_labels`
turns that dict into a label map, deterministically. Intensities are the caller's business.

Sizes are in millimetres, scaled with the body (or head) width so that a phantom fills the
same fraction of any field of view. z positions of the body are fractions of the volume's
half height, so a short volume still shows lungs at the top and kidneys at the bottom; the
2D phantom is the plane z = 0, chosen to cut lung bases, liver, spleen, stomach and spine.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from medgan.data.phantom_shapes import Ellipsoid, Grid, paint, smooth_field

__all__ = ["BODY_TISSUES", "HEAD_TISSUES", "body_labels", "head_labels", "sample_body_anatomy", "sample_head_anatomy"]

BODY_TISSUES = (
    "air", "fat", "muscle", "soft_tissue", "lung", "heart", "blood", "liver", "portal_vein", "spleen",
    "stomach", "gas", "kidney", "aorta", "ivc", "cortical_bone", "cancellous_bone", "disc", "spinal_canal", "rib",
)  # fmt: skip
HEAD_TISSUES = ("air", "skin", "fat", "cortical_bone", "diploe", "csf", "grey_matter", "white_matter", "deep_grey")

_B = {name: i for i, name in enumerate(BODY_TISSUES)}
_H = {name: i for i, name in enumerate(HEAD_TISSUES)}
_INF = math.inf
_REFERENCE_BODY_HALF_WIDTH_MM = 110.0  # sizes below are tuned for a 220 mm wide body
_REFERENCE_HEAD_HALF_WIDTH_MM = 75.0  # and a 150 mm wide head
# Bowel gas pockets: x and y in body half-widths, z in half-heights (the lower abdomen), radius in mm.
_GAS_POCKET_RANGES = ((-0.5, 0.5), (-0.05, 0.35), (-0.95, -0.35), (6.0, 14.0))


def _jitter(rng: np.random.Generator, variation: float, spread: float, digits: int = 3) -> float:
    """A uniform draw in +-spread*variation, rounded so the record stays short and exact."""
    return round(float(rng.uniform(-spread, spread)) * variation, digits)


def sample_body_anatomy(rng: np.random.Generator, variation: float = 1.0) -> dict:
    """Draw the random part of the body layout (fractions and mm at the reference size)."""
    organs = ("liver", "spleen", "stomach", "kidneys", "lungs", "heart")
    return {
        "aspect": round(0.70 + _jitter(rng, variation, 0.05), 3),  # AP depth / LR width
        "shift_mm": [_jitter(rng, variation, 4.0, 2), _jitter(rng, variation, 4.0, 2)],
        "fat_mm": round(16.0 + _jitter(rng, variation, 6.0, 2), 2),
        "muscle_mm": round(11.0 + _jitter(rng, variation, 3.0, 2), 2),
        "organ_scale": {name: round(1.0 + _jitter(rng, variation, 0.08), 3) for name in organs},
        "organ_shift_mm": {name: [_jitter(rng, variation, 4.0, 2), _jitter(rng, variation, 4.0, 2)] for name in organs},
        "rib_phase_mm": round(float(rng.uniform(0.0, 26.0)), 2),
        "bowel_seed": int(rng.integers(2**31)),
        "gas_pockets": [
            [round(float(rng.uniform(low, high)), 3) for low, high in _GAS_POCKET_RANGES]
            for _ in range(int(rng.integers(3, 7)))
        ],
    }


def body_labels(grid: Grid, anatomy: dict, body_width_mm: float) -> np.ndarray:
    """Label map (indices into BODY_TISSUES) of the body layout on `grid`."""
    a = body_width_mm / 2.0
    s = a / _REFERENCE_BODY_HALF_WIDTH_MM
    b = anatomy["aspect"] * a
    c = grid.fov_mm[2] / 2.0 if grid.spatial_dims == 3 else a  # in 2D only ratios of z sizes matter
    dx, dy = (v * s for v in anatomy["shift_mm"])
    fat, muscle = anatomy["fat_mm"] * s, anatomy["muscle_mm"] * s
    scale, shift = anatomy["organ_scale"], anatomy["organ_shift_mm"]

    def organ(name: str, tissue: str, u: float, v: float, w: float, ru: float, rv: float, rw: float, angle=0.0):
        k, (sx, sy) = scale[name], shift[name]
        centre = (dx + u * a + sx * s, dy + v * a + sy * s, w * c)
        return Ellipsoid(_B[tissue], centre, (ru * a * k, rv * a * k, rw * c * k), angle)

    labels = np.zeros(grid.shape, dtype=np.uint8)
    paint(labels, grid, Ellipsoid(_B["fat"], (dx, dy, 0.0), (a, b, _INF)))
    paint(labels, grid, Ellipsoid(_B["muscle"], (dx, dy, 0.0), (a - fat, b - fat, _INF)))
    wall = fat + muscle
    paint(labels, grid, Ellipsoid(_B["soft_tissue"], (dx, dy + 0.05 * b, 0.0), (a - wall, b - wall - 0.05 * b, _INF)))
    # Bowel loops in mesenteric fat: fat wherever a smooth random field is low, so organs stand out.
    bowel = smooth_field(grid, anatomy["bowel_seed"], scale_mm=9.0 * s)
    labels[(bowel < 0.1) & (labels == _B["soft_tissue"])] = _B["fat"]
    inside = [_B["soft_tissue"], _B["fat"]]
    in_cavity = np.zeros_like(labels)
    paint(in_cavity, grid, Ellipsoid(1, (dx, dy + 0.05 * b, 0.0), (a - wall, b - wall - 0.05 * b, _INF)))

    # The spine is placed from the back inwards, so it always sits inside the body wall.
    tip_y = dy - b + fat + 0.03 * a
    canal_y = tip_y + 0.12 * a
    vertebra_y = canal_y + 0.17 * a
    for side in (-1, 1):  # paraspinal muscles
        paint(labels, grid, Ellipsoid(_B["muscle"], (dx + side * 0.2 * a, canal_y, 0.0), (0.15 * a, 0.13 * a, _INF)))
    spine_v = (vertebra_y - dy) / a  # the vertebra's depth in body units, for organs placed beside it
    # Painted in order, each over the ones before: the liver dome and the spleen push up into the lung bases.
    organs = [
        organ("lungs", "lung", 0.4, -0.1, 0.5, 0.34, 0.5, 0.8),
        organ("lungs", "lung", -0.42, -0.1, 0.5, 0.32, 0.5, 0.8),
        organ("heart", "heart", -0.1, 0.12, 0.6, 0.3, 0.28, 0.3),
        organ("heart", "blood", -0.12, 0.12, 0.62, 0.2, 0.18, 0.2),
        organ("liver", "liver", 0.34, 0.08, -0.3, 0.42, 0.4, 0.6, angle=25.0),
        organ("spleen", "spleen", -0.56, spine_v + 0.1, -0.15, 0.14, 0.24, 0.32, angle=-35.0),
        organ("stomach", "stomach", -0.3, 0.2, -0.1, 0.22, 0.17, 0.35),
        organ("kidneys", "kidney", 0.36, spine_v, -0.6, 0.12, 0.15, 0.38, angle=20.0),
        organ("kidneys", "kidney", -0.36, spine_v, -0.55, 0.12, 0.15, 0.38, angle=-20.0),
    ]
    for shape in organs:  # organs stay inside the cavity, whatever their jitter
        organ_mask = np.zeros_like(labels)
        paint(organ_mask, grid, replace(shape, label=1))
        labels[(organ_mask == 1) & (in_cavity == 1)] = shape.label
    liver = organs[4]
    portal = (liver.centre_mm[0] - 0.1 * a, liver.centre_mm[1] - 0.05 * a, liver.centre_mm[2] + 0.1 * c)
    paint(labels, grid, Ellipsoid(_B["portal_vein"], portal, (0.05 * a, 0.04 * a, 0.15 * c)), within=[_B["liver"]])
    stomach = organs[6].centre_mm
    gas_cap = Ellipsoid(_B["gas"], (stomach[0], stomach[1] + 0.12 * a, stomach[2]), (0.17 * a, 0.08 * a, 0.3 * c))
    paint(labels, grid, gas_cap, within=[_B["stomach"]])
    for u, v, w, radius in anatomy["gas_pockets"]:  # bowel gas in the lower abdomen
        paint(labels, grid, Ellipsoid(_B["gas"], (u * a, v * a, w * c), (radius * s,) * 3), within=inside)

    anterior = vertebra_y + 0.12 * a
    paint(labels, grid, Ellipsoid(_B["aorta"], (dx - 0.09 * a, anterior + 0.1 * a, 0.0), (0.1 * a, 0.1 * a, _INF)))
    paint(labels, grid, Ellipsoid(_B["ivc"], (dx + 0.15 * a, anterior + 0.08 * a, 0.0), (0.08 * a, 0.06 * a, _INF)))
    vertebra = Ellipsoid(_B["cortical_bone"], (dx, vertebra_y, 0.0), (0.15 * a, 0.12 * a, _INF))
    paint(labels, grid, vertebra)
    marrow = (0.15 * a - 3 * s, 0.12 * a - 3 * s, _INF)  # inside a 3 mm cortex
    paint(labels, grid, Ellipsoid(_B["cancellous_bone"], (dx, vertebra_y, 0.0), marrow))
    paint(labels, grid, Ellipsoid(_B["cortical_bone"], (dx, canal_y, 0.0), (0.1 * a, 0.09 * a, _INF)))
    paint(labels, grid, Ellipsoid(_B["cortical_bone"], (dx, (tip_y + canal_y) / 2, 0.0), (0.03 * a, 0.08 * a, _INF)))
    paint(labels, grid, Ellipsoid(_B["spinal_canal"], (dx, canal_y, 0.0), (0.06 * a, 0.055 * a, _INF)))
    if grid.spatial_dims == 3:
        _paint_discs(labels, grid, vertebra, period_mm=30.0 * s, thickness_mm=7.0 * s)
    _paint_ribs(labels, grid, (dx, dy), (a - fat - muscle / 2, b - fat - muscle / 2), s, anatomy["rib_phase_mm"], c)
    return labels


def _paint_discs(labels: np.ndarray, grid: Grid, vertebra: Ellipsoid, period_mm: float, thickness_mm: float) -> None:
    """Intervertebral discs: bands of the vertebral column, centred between z = 0 vertebrae."""
    z = grid.axes_mm()[2]
    in_disc = np.abs(np.mod(z, period_mm) - period_mm / 2) < thickness_mm / 2
    bone = np.zeros_like(labels)
    paint(bone, grid, Ellipsoid(1, vertebra.centre_mm, vertebra.radii_mm))
    labels[(bone == 1) & np.broadcast_to(in_disc, labels.shape)] = _B["disc"]


def _paint_ribs(labels, grid: Grid, centre, radii, s: float, phase_mm: float, c: float) -> None:
    """Ribs: a thin bony band inside the muscle wall, sparing sternum and spine.

    Ribs run obliquely, falling as they wrap forwards, so each is a helical band: an axial
    slice cuts several short rib segments rather than a ring.
    """
    axes = grid.axes_mm()
    x, y = axes[0] - centre[0], axes[1] - centre[1]
    r = np.sqrt((x / radii[0]) ** 2 + (y / radii[1]) ** 2)
    band = np.abs(r - 1.0) * min(radii) < 3.5 * s
    sector = ~((np.abs(x) < 0.3 * radii[0]) & (y > 0)) & ~((np.abs(x) < 0.25 * radii[0]) & (y < 0))
    arc_mm = np.abs(np.arctan2(x, -y)) * (radii[0] + radii[1]) / 2  # distance round from the spine
    z = axes[2] if grid.spatial_dims == 3 else 0.0
    period_mm, width_mm = 26.0 * s, 11.0 * s
    on_rib = np.mod(z + phase_mm * s + 0.35 * arc_mm, period_mm) < width_mm
    mask = np.broadcast_to(band & sector & on_rib & (z > -0.45 * c), labels.shape)
    labels[mask & (labels == _B["muscle"])] = _B["rib"]


def sample_head_anatomy(rng: np.random.Generator, variation: float = 1.0) -> dict:
    """Draw the random part of the head layout."""
    return {
        "aspect": round(1.22 + _jitter(rng, variation, 0.05), 3),  # AP length / LR width
        "shift_mm": [_jitter(rng, variation, 3.0, 2), _jitter(rng, variation, 3.0, 2)],
        "scalp_mm": round(5.0 + _jitter(rng, variation, 1.5, 2), 2),
        "skull_mm": round(7.0 + _jitter(rng, variation, 1.5, 2), 2),
        "ventricle_scale": round(1.0 + _jitter(rng, variation, 0.25), 3),
        "ventricle_angle_deg": round(12.0 + _jitter(rng, variation, 5.0, 2), 2),
        "folding_seed": int(rng.integers(2**31)),
        "folding_mm": round(2.0 + _jitter(rng, variation, 0.6, 2), 2),
    }


def head_labels(grid: Grid, anatomy: dict, head_width_mm: float) -> np.ndarray:
    """Label map (indices into HEAD_TISSUES) of the head layout on `grid`."""
    a = head_width_mm / 2.0
    s = a / _REFERENCE_HEAD_HALF_WIDTH_MM
    b = anatomy["aspect"] * a
    h = 1.05 * a  # half height of the skull
    dx, dy = (v * s for v in anatomy["shift_mm"])
    zc = -0.2 * a  # the head's centre sits low, so z = 0 passes through the ventricles

    def shell(tissue: str, inset_mm: float) -> Ellipsoid:
        return Ellipsoid(_H[tissue], (dx, dy, zc), (a - inset_mm, b - inset_mm, h - inset_mm))

    labels = np.zeros(grid.shape, dtype=np.uint8)
    scalp, skull = anatomy["scalp_mm"] * s, anatomy["skull_mm"] * s
    for tissue, inset in (
        ("skin", 0.0), ("fat", 0.45 * scalp), ("cortical_bone", scalp), ("diploe", scalp + 0.3 * skull),
        ("cortical_bone", scalp + 0.7 * skull), ("csf", scalp + skull),
    ):  # fmt: skip
        paint(labels, grid, shell(tissue, inset))
    brain_inset = scalp + skull + 2.0 * s
    folding = smooth_field(grid, anatomy["folding_seed"], scale_mm=4.0 * s)
    fold_mm = anatomy["folding_mm"] * s
    paint(labels, grid, shell("grey_matter", brain_inset))
    white = shell("white_matter", brain_inset + 2.5 * s + fold_mm)
    paint(labels, grid, white, boundary_field=folding, boundary_mm=fold_mm)
    # Sulci: CSF along the zero crossings of a second field, thin winding lines through the cortex.
    sulci = smooth_field(grid, anatomy["folding_seed"] + 1, scale_mm=4.0 * s)
    labels[(np.abs(sulci) < 0.15) & (labels == _H["grey_matter"])] = _H["csf"]
    for end in (-1, 1):  # the interhemispheric fissure, front and back; the middle is the corpus callosum
        fissure = Ellipsoid(_H["csf"], (dx, dy + end * 0.7 * b, zc), (1.0 * s, 0.45 * b, h))
        paint(labels, grid, fissure, within=[_H["grey_matter"], _H["white_matter"]])

    z = zc + 0.2 * a  # level of the deep structures
    vs, angle = anatomy["ventricle_scale"], anatomy["ventricle_angle_deg"]
    for side in (-1, 1):
        for centre, radii in (((10, -8), (8, 12, 9)), ((11, 14), (5, 9, 8)), ((22, 5), (4.5, 14, 9))):
            nucleus = (dx + side * centre[0] * s, dy + centre[1] * s, z)
            paint(labels, grid, Ellipsoid(_H["deep_grey"], nucleus, (radii[0] * s, radii[1] * s, radii[2] * s)))
    for side in (-1, 1):
        centre = (dx + side * 8.0 * s * vs, dy + 6.0 * s, z + 5.0 * s)
        radii = (4.0 * s * vs, 24.0 * s, 10.0 * s * vs)
        paint(labels, grid, Ellipsoid(_H["csf"], centre, radii, angle_deg=side * angle))
    paint(labels, grid, Ellipsoid(_H["csf"], (dx, dy - 2.0 * s, z), (1.8 * s * vs, 10.0 * s, 8.0 * s)))
    return labels
