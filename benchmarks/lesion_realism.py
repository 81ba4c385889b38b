"""Are medgan's lesions like real ones? Real tumours against medgan's lesions and pasted ellipsoids, in the same scans.

    python benchmarks/lesion_realism.py [--lesions 6] [--json out.json] [--learned manifest.json]

The real tumours are those of the pyradiomics 3.0.1 test cases (fetched by benchmarks/registry_data.py):
lung1 and lung2 (chest CT, 0.6 x 0.6 x 5 mm) and brain1 and brain2 (T1 post-contrast MR, 0.8 x 0.8 x
6.5 mm). In each scan, lesions matched to its tumour's equivalent diameter and mean contrast to the
surroundings go into the healthy part of the same organ, made from the scan itself:

  lungs   air inside the body: HU < -400 in voxels that the body (HU > -500, holes filled slice by slice)
          encloses, opened once, the two largest parts
  brain   inside the head (above the Otsu threshold, holes filled slice by slice) and over 12 mm in from its
          edge (past scalp and skull), above 0.6 x its median (not CSF), below its 99th percentile, opened
          once in-plane, the largest part

less the tumour grown by 10 mm. Two kinds (three with --learned) are inserted at the same places:

  medgan  `simulate_lesions` with the case's preset (ct-lung-nodule or mr-brain-enhancing, no mass effect),
          diameter and contrast set to the tumour's (a tumour larger than the healthy organ can hold, such
          as lung2's 45 mm one, is matched by the largest lesion that fits, 10% steps down)
  pasted  an ellipsoid of the same volume (axes 1 : 0.85 : 0.7, random orientation), filled with the
          surroundings' mean plus the contrast, pasted without blur or texture: the plain baseline
  learned (with --learned) medgan's lesions again, same records and so the same places and shapes, their
          content painted by an inpaint checkpoint (`LearnedRenderer`) that never saw the case: the
          leave-one-out models of benchmarks/lesion_learned.py (its manifest.json), or CASE=CKPT. An MR
          scan is scaled to the model's scale first (`mr_scale`: healthy brain median 1000) and back after

Statistics of each lesion (in its label mask, and across its border): mean and sd of the contrast to the
surroundings (in the contrast's units), entropy of the intensity histogram (bins of 1/32 of the real
tumour's 1-99% range), GLCM contrast and homogeneity (in-plane, 32 levels over that range, offsets 1 in
four directions, symmetric), and the border: the profile of intensity against in-plane distance to the
boundary, scaled from the surroundings' mean (0) to the lesion's (1), and the 20-80% width (mm) of the
error function fitted to it. For each
statistic it prints the real value, each kind's mean, and each kind's distance to the real tumour
(|kind - real| / |real|, averaged over cases).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CASES = {"lung1": "ct-lung-nodule", "lung2": "ct-lung-nodule", "brain1": "mr-brain-enhancing",
         "brain2": "mr-brain-enhancing"}  # fmt: skip
STATS = ("mean_contrast", "sd", "entropy", "glcm_contrast", "glcm_homogeneity", "border_width_mm")
SHELL_MM = (6.0, 10.0)  # surroundings of every lesion, real or simulated: organ voxels this far out (past a slice)


def log(message: str) -> None:
    print(f"[lesion_realism] {message}", file=sys.stderr, flush=True)


def lungs_of(hu: np.ndarray) -> np.ndarray:
    """Air inside the body (see the module docstring)."""
    body = hu > -500
    filled = np.stack([ndimage.binary_fill_holes(body[:, :, k]) for k in range(hu.shape[2])], axis=2)
    lungs = ndimage.binary_opening(filled & (hu < -400), iterations=1)
    labels, count = ndimage.label(lungs)
    if count == 0:
        return lungs
    sizes = ndimage.sum(lungs, labels, range(1, count + 1))
    return np.isin(labels, np.argsort(sizes)[::-1][:2] + 1)


def brain_of(image: np.ndarray, spacing) -> np.ndarray:
    """Brain tissue inside the head (see the module docstring)."""
    from skimage.filters import threshold_otsu

    head = image > threshold_otsu(image[image > 0])
    head = np.stack([ndimage.binary_fill_holes(head[:, :, k]) for k in range(image.shape[2])], axis=2)
    depth = np.stack([ndimage.distance_transform_edt(head[:, :, k], sampling=spacing[:2])
                      for k in range(image.shape[2])], axis=2)  # fmt: skip
    inside = depth > 12.0  # past the scalp and the skull
    level = np.median(image[inside])
    tissue = inside & (image > 0.6 * level) & (image < np.percentile(image[inside], 99))
    tissue = ndimage.binary_opening(tissue, structure=np.ones((3, 3, 1)))
    labels, count = ndimage.label(tissue)
    if count:
        tissue = labels == (np.argmax(ndimage.sum(tissue, labels, range(1, count + 1))) + 1)
    return tissue


def load_case(name: str):
    """(MetaTensor image, tumour mask, organ mask, healthy organ mask, modality)."""
    from benchmarks.registry_data import pyradiomics_case
    from medgan.io import read_image

    image_path, label_path = pyradiomics_case(name)
    image, label = read_image(image_path), read_image(label_path)
    voxels = image.numpy()[0].astype(np.float64)
    tumour = label.numpy()[0] > 0
    modality = "CT" if name.startswith("lung") else "MR"
    spacing = spacing_of(image)
    organ = lungs_of(voxels) if modality == "CT" else brain_of(voxels, spacing)
    near_tumour = ndimage.distance_transform_edt(~tumour, sampling=spacing) <= 10.0
    return image, tumour, organ & ~tumour, organ & ~near_tumour, modality


MR_REFERENCE = 1000.0  # a learned model's MR scans are scaled so that their healthy brain's median is this


def mr_scale(voxels: np.ndarray, healthy: np.ndarray) -> float:
    """The factor that brings an MR scan to learned models' scale: its healthy brain's median to MR_REFERENCE
    (MR has no physical unit; a model trained on one scan's intensities must see another's on the same scale)."""
    return MR_REFERENCE / float(np.median(voxels[healthy]))


def spacing_of(image) -> tuple[float, ...]:
    return tuple(float(v) for v in np.linalg.norm(np.asarray(image.affine)[:3, :3], axis=0))


def surroundings(voxels, mask, organ, spacing) -> float:
    distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
    shell = (distance > SHELL_MM[0]) & (distance <= SHELL_MM[1]) & organ & ~mask
    return float(voxels[shell].mean())


def glcm(voxels, mask, lo, hi, levels=32) -> tuple[float, float]:
    """(contrast, homogeneity) of the symmetric, normalised in-plane co-occurrence matrix inside the mask."""
    q = np.clip(((voxels - lo) / max(hi - lo, 1e-9) * levels).astype(int), 0, levels - 1)
    counts = np.zeros((levels, levels))
    for di, dj in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = (slice(0, q.shape[0] - di), slice(max(0, -dj), q.shape[1] - max(0, dj)))
        b = (slice(di, None), slice(max(0, dj), q.shape[1] - max(0, -dj) if dj < 0 else None))
        both = mask[a] & mask[b]
        np.add.at(counts, (q[a][both], q[b][both]), 1)
    counts = counts + counts.T
    p = counts / max(counts.sum(), 1)
    i, j = np.indices(p.shape)
    return float((p * (i - j) ** 2).sum()), float((p / (1 + (i - j) ** 2)).sum())


BORDER_BINS_MM = np.arange(-6.0, 6.5, 1.0)  # signed in-plane distance to the boundary, negative inside


def border_profile(voxels, mask, organ, spacing, level_out: float) -> tuple[np.ndarray, float]:
    """Mean intensity against in-plane signed distance to the boundary (mm, negative inside), scaled to 0 at
    the surroundings' mean and 1 at the lesion's, and its 20-80% width: that of the error function fitted
    to it (least squares over width and position, so rims, cores and halos do not break it)."""
    from scipy.special import erfc

    signed = np.zeros(voxels.shape)
    for k in range(voxels.shape[2]):
        if mask[:, :, k].any():
            inside = ndimage.distance_transform_edt(mask[:, :, k], sampling=spacing[:2])
            outside = ndimage.distance_transform_edt(~mask[:, :, k], sampling=spacing[:2])
            signed[:, :, k] = np.where(mask[:, :, k], 0.5 * min(spacing[:2]) - inside,
                                       outside - 0.5 * min(spacing[:2]))  # fmt: skip
    rows = mask.any(axis=(0, 1))
    use = (mask | organ) & rows[None, None, :]
    bins = BORDER_BINS_MM
    centres = (bins[:-1] + bins[1:]) / 2
    profile = []
    for a, b in itertools.pairwise(bins):
        ring = use & (signed >= a) & (signed < b)
        profile.append(voxels[ring].mean() if ring.any() else np.nan)
    level_in = voxels[mask].mean()
    scaled = (np.asarray(profile) - level_out) / (level_in - level_out)
    keep = np.isfinite(scaled)
    sigmas = np.geomspace(0.2, 6.0, 120)
    shifts = np.linspace(-2.0, 2.0, 41)
    model = 0.5 * erfc((centres[keep][None, None] - shifts[None, :, None]) / (sigmas[:, None, None] * np.sqrt(2)))
    error = ((model - scaled[keep][None, None]) ** 2).sum(-1)
    best = np.unravel_index(np.argmin(error), error.shape)
    return scaled, float(2 * 0.8416 * sigmas[best[0]])


def around_mask(mask: np.ndarray, spacing, margin_mm: float = 15.0) -> tuple[slice, ...]:
    """A box around the mask, `margin_mm` wider on every side (the statistics need nothing further out)."""
    where = np.argwhere(mask)
    pad = [int(np.ceil(margin_mm / s)) for s in spacing]
    return tuple(slice(max(0, lo - p), hi + p + 1) for lo, hi, p in zip(where.min(0), where.max(0), pad, strict=True))


def statistics_of(voxels, mask, organ, spacing, relative: bool, window) -> dict:
    box = around_mask(mask, spacing)
    voxels, mask, organ = voxels[box], mask[box], organ[box]
    around = surroundings(voxels, mask, organ, spacing)
    inside = voxels[mask]
    unit = around if relative else 1.0
    lo, hi = window
    histogram = np.histogram(inside, bins=32, range=(lo, hi))[0].astype(float)
    p = histogram[histogram > 0] / histogram.sum()
    contrast_glcm, homogeneity = glcm(voxels, mask, lo, hi)
    _, width = border_profile(voxels, mask, organ, spacing, around)
    return {"mean_contrast": (inside.mean() - around) / unit, "sd": inside.std() / abs(unit),
            "entropy": float(-(p * np.log2(p)).sum()), "glcm_contrast": contrast_glcm,
            "glcm_homogeneity": homogeneity, "border_width_mm": width,
            "equivalent_diameter_mm": (6 * mask.sum() * np.prod(spacing) / math.pi) ** (1 / 3)}  # fmt: skip


def pasted_ellipsoid(voxels, affine, centre_voxel, diameter_mm, value, rng) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid of the diameter's volume at the centre, filled with `value`, no blur: (image, mask)."""
    from medgan.lesions.models import random_rotation

    ratios = np.array([1.0, 0.85, 0.7])
    axes = ratios * (diameter_mm / 2) / np.prod(ratios) ** (1 / 3)
    turn = random_rotation(rng)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    reach = [int(np.ceil(axes.max() / s)) + 1 for s in spacing]
    centre = np.round(centre_voxel).astype(int)
    box = tuple(slice(max(0, c - r), min(n, c + r + 1)) for c, r, n in zip(centre, reach, voxels.shape, strict=True))
    offset = np.array([b.start for b in box])
    index = np.stack(np.indices([b.stop - b.start for b in box]), -1).reshape(-1, 3) + offset - np.asarray(centre_voxel)
    local = (index @ affine[:3, :3].T) @ turn / axes
    mask = np.zeros(voxels.shape, bool)
    mask[box] = ((local**2).sum(-1) <= 1).reshape(mask[box].shape)
    out = voxels.copy()
    out[mask] = value
    return out, mask


def run_case(name: str, lesions: int, learned: dict | None = None, device: str = "cpu") -> dict:
    """Real tumour, medgan's and pasted lesions (and, with `learned` = {"checkpoint": path, ...}, learned ones
    at medgan's places) in one case: the real statistics and each kind's means."""
    from medgan.errors import InputError
    from medgan.lesions.insert import simulate_lesions
    from medgan.lesions.learned import LearnedRenderer
    from medgan.lesions.models import LESION_MODELS

    image, tumour, organ, healthy, modality = load_case(name)
    voxels = image.numpy()[0].astype(np.float64)
    spacing = spacing_of(image)
    affine = np.asarray(image.affine, float)
    relative = modality == "MR"
    window = tuple(np.percentile(voxels[tumour], [1, 99]))
    real = statistics_of(voxels, tumour, organ, spacing, relative, window)
    log(f"{name}: tumour {real['equivalent_diameter_mm']:.1f} mm, contrast {real['mean_contrast']:.3g}")
    kinds = {"medgan": [], "pasted": [], **({"learned": []} if learned else {})}
    renderer = LearnedRenderer(learned["checkpoint"], device=device) if learned else None
    scale = mr_scale(voxels, healthy) if learned and relative else 1.0  # the scale the learned model trained at
    same_place, painted_contrasts = 0, []
    rng = np.random.default_rng(0)
    organ_tensor = torch.from_numpy(healthy)
    diameter = real["equivalent_diameter_mm"]
    for seed in range(lesions):
        while True:  # a tumour larger than the healthy organ can hold (lung2's) is matched as large as fits
            model = LESION_MODELS.build(CASES[name], diameter_mm=(diameter, diameter),
                                        contrast=(real["mean_contrast"],) * 2, mass_effect_probability=0.0)  # fmt: skip
            try:
                result = simulate_lesions(image, organ_tensor, affine=affine, modality=modality, n=1, model=model,
                                          seed=seed)  # fmt: skip
                break
            except InputError:
                diameter *= 0.9
                log(f"{name}: no place for it; trying {diameter:.1f} mm")
        record = result.records[0]
        mask = result.labels.numpy()[0] == record.label
        edited = result.image.numpy()[0].astype(np.float64)
        kinds["medgan"].append(statistics_of(edited, mask, organ | mask, spacing, relative, window))
        if renderer is not None:  # the same record (seed, model) painted by the network, so the same place and shape
            painted = simulate_lesions(image * scale, organ_tensor, affine=affine, modality=modality, n=1, model=model,
                                       seed=seed, renderer=renderer)  # fmt: skip
            learned_mask = painted.labels.numpy()[0] == painted.records[0].label
            same_place += int(np.array_equal(learned_mask, mask))
            rendered = painted.records[0].rendered  # the network's own contrast, before it is shifted to the request
            painted_contrasts.append(rendered["painted_contrast"] / (rendered["surroundings_mean"] if relative else 1))
            learned_image = painted.image.numpy()[0].astype(np.float64) / scale
            kinds["learned"].append(statistics_of(learned_image, learned_mask, organ | learned_mask, spacing, relative,
                                                  window))  # fmt: skip
        box = around_mask(mask, spacing)
        around = surroundings(voxels[box], mask[box], organ[box], spacing)
        value = around * (1 + real["mean_contrast"]) if relative else around + real["mean_contrast"]
        pasted, pasted_mask = pasted_ellipsoid(voxels, affine, record.centre_voxel, real["equivalent_diameter_mm"],
                                               value, rng)  # fmt: skip
        kinds["pasted"].append(statistics_of(pasted, pasted_mask, organ | pasted_mask, spacing, relative, window))
    means = {k: {s: float(np.nanmean([v[s] for v in values])) for s in real} for k, values in kinds.items()}
    out = {"real": real, "diameter_used_mm": diameter, **means}
    if renderer is not None:
        out["learned_model"] = {**learned, "checkpoint_sha256": renderer.sha256, "checkpoint_step": renderer.step,
                                "mr_scale": scale, "lesions_at_medgan_places": same_place,
                                "painted_contrast_before_shift": float(np.mean(painted_contrasts))}  # fmt: skip
    return out


def learned_models(specs: list[str]) -> dict[str, dict]:
    """--learned: case -> {"checkpoint": path, ...}, from lesion_learned.py's manifest(s) or CASE=CKPT pairs."""
    models = {}
    for spec in specs:
        case, sep, path = spec.partition("=")
        if sep:
            if case not in CASES:
                raise SystemExit(f"lesion_realism: --learned {spec}: {case} is not a case ({', '.join(CASES)})")
            models[case] = {"checkpoint": path}
            continue
        try:
            with open(spec, encoding="utf-8") as fh:
                manifest = json.load(fh)["models"]
        except (OSError, ValueError, KeyError) as err:
            raise SystemExit(f"lesion_realism: --learned {spec}: not a lesion_learned.py manifest ({err})") from None
        base = os.path.dirname(os.path.abspath(spec))
        models.update({case: {**m, "checkpoint": os.path.join(base, m["checkpoint"])} for case, m in manifest.items()})
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lesions", type=int, default=6, help="lesions of each kind per case")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--learned", nargs="*", default=[], metavar="MANIFEST|CASE=CKPT",
                        help="also judge learned content: benchmarks/lesion_learned.py's manifest.json (a model per "
                        "case that never saw it) or CASE=inpaint checkpoint pairs")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="where learned models paint")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    learned = learned_models(args.learned)
    missing = [n for n in args.cases if learned and n not in learned]
    if missing:
        parser.error(f"--learned names no model for {', '.join(missing)}; judge those with --cases or add them")
    results = {name: run_case(name, args.lesions, learned.get(name), args.device) for name in args.cases}
    shown_kinds = ("medgan", "pasted", "learned") if learned else ("medgan", "pasted")
    rows = []
    print(f"{'statistic':18s} {'kind':7s} " + " ".join(f"{n:>10s}" for n in args.cases) + "   distance")
    for stat in STATS:
        distances = {}
        for kind in ("real", *shown_kinds):
            values = [results[n][kind][stat] for n in args.cases]
            if kind != "real":
                real = [results[n]["real"][stat] for n in args.cases]
                gaps = [abs(v - r) / max(abs(r), 1e-9) for v, r in zip(values, real, strict=True)]
                distances[kind] = float(np.nanmean(gaps))
            shown = " ".join(f"{v:10.4g}" for v in values)
            print(f"{stat:18s} {kind:7s} {shown}   {distances.get(kind, float('nan')):8.3f}")
        row = {"statistic": stat, **{f"distance_{k}": v for k, v in distances.items()},
               "medgan_nearer": distances["medgan"] < distances["pasted"]}  # fmt: skip
        if learned:
            row["learned_nearer_than_medgan"] = distances["learned"] < distances["medgan"]
            row["learned_nearer_than_pasted"] = distances["learned"] < distances["pasted"]
        rows.append(row)
    widths = {kind: [results[n][kind]["border_width_mm"] for n in args.cases] for kind in ("real", "medgan", "pasted")}
    no_sharper = all(m >= 0.9 * r for m, r in zip(widths["medgan"], widths["real"], strict=True))
    print(f"medgan nearer the real tumours on {sum(r['medgan_nearer'] for r in rows)} of {len(rows)} statistics; "
          f"border no sharper than the real tumours (within 10%) in every case: {no_sharper}")  # fmt: skip
    if learned:
        print(f"learned nearer the real tumours than medgan's procedural content on "
              f"{sum(r['learned_nearer_than_medgan'] for r in rows)} of {len(rows)} statistics, than pasted "
              f"ellipsoids on {sum(r['learned_nearer_than_pasted'] for r in rows)}")  # fmt: skip
        for n in args.cases:
            m = results[n]["learned_model"]
            print(f"  {n}: {m['checkpoint']} (step {m['checkpoint_step']}, trained on "
                  f"{', '.join(m.get('trained_on', ['?']))}); {m['lesions_at_medgan_places']} of {args.lesions} "
                  "lesions at medgan's places; painted contrast before the shift to the request "
                  f"{m['painted_contrast_before_shift']:.3g}")  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"cases": results, "summary": rows, "no_sharper": no_sharper}, fh, indent=1)


if __name__ == "__main__":
    main()
