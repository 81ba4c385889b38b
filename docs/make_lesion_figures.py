"""Draw the lesion montages of docs/lesions.md: real tumours beside medgan's lesions in the same scans.

    python docs/make_lesion_figures.py            # writes docs/figures/lesion_ct.png and lesion_mr.png
    python docs/make_lesion_figures.py --learned .cache/lesion_learned/manifest.json   # and a learned row

Scans and real tumours are the pyradiomics 3.0.1 cases lung1 (chest CT) and brain1 (T1 post-contrast
MR), fetched by benchmarks/registry_data.py; organ masks are made from the scans as in
benchmarks/lesion_realism.py. Each tile is the axial slice through a lesion's centre, 48 mm across,
in a fixed window (CT: lung window -1000..200 HU; MR: the scan's 1st..99.5th percentile). The first
tile of each row is the real tumour; then medgan's lesions at several sizes (columns) and contrasts
(rows), each from its own seed, with its size and contrast written under it. With --learned (the
manifest.json of benchmarks/lesion_learned.py's leave-one-out models) a last
row shows the first row's lesions (same seeds, so the same places and shapes) painted by the model
that never saw this case, after the tumour it was trained on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

TILE_MM = 48.0
TILE_PX = 160
FIGURES = {
    "lesion_ct.png": ("lung1", "ct-lung-nodule", (6.0, 12.0, 20.0), (500.0, 750.0), (-1000.0, 200.0)),
    "lesion_mr.png": ("brain1", "mr-brain-enhancing", (10.0, 20.0, 30.0), (0.15, 0.4), None),
}


def tile(voxels: np.ndarray, spacing, centre, window, mask=None) -> Image.Image:
    """The axial slice through `centre` (voxel), TILE_MM across, resampled to TILE_PX, windowed to grey."""
    k = round(float(centre[2]))
    half = [TILE_MM / 2 / s for s in spacing[:2]]
    i = np.linspace(centre[0] - half[0], centre[0] + half[0], TILE_PX)
    j = np.linspace(centre[1] - half[1], centre[1] + half[1], TILE_PX)
    ii, jj = np.meshgrid(np.clip(np.round(i), 0, voxels.shape[0] - 1).astype(int),
                         np.clip(np.round(j), 0, voxels.shape[1] - 1).astype(int), indexing="xy")  # fmt: skip
    plane = voxels[ii, jj, k]
    grey = np.clip((plane - window[0]) / (window[1] - window[0]), 0, 1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=-1)
    if mask is not None:  # the lesion's outline in the tile, one pixel wide
        inside = mask[ii, jj, k]
        edge = inside & ~(
            np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & np.roll(inside, -1, 1)
        )
        rgb[edge] = (255, 80, 60)
    return Image.fromarray(rgb)


def captioned(image: Image.Image, text: str) -> Image.Image:
    out = Image.new("RGB", (image.width, image.height + 16), "white")
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text((4, image.height + 2), text, fill="black")
    return out


def figure(name: str, case: str, preset: str, diameters, contrasts, window, learned: dict | None = None) -> str:
    from benchmarks.lesion_realism import load_case, spacing_of, statistics_of
    from medgan.lesions.insert import simulate_lesions
    from medgan.lesions.models import LESION_MODELS

    image, tumour, organ, healthy, modality = load_case(case)
    voxels = image.numpy()[0].astype(np.float64)
    spacing = spacing_of(image)
    if window is None:
        window = tuple(np.percentile(voxels[voxels > 0], [1, 99.5]))
    relative = modality == "MR"
    real = statistics_of(voxels, tumour, organ, spacing, relative, tuple(np.percentile(voxels[tumour], [1, 99])))
    unit = "" if relative else " HU"
    centre = np.argwhere(tumour).mean(0)
    rows = []
    for r, contrast in enumerate(contrasts):
        if r == 0:
            first = captioned(tile(voxels, spacing, centre, window), f"real {real['equivalent_diameter_mm']:.0f} mm "
                              f"{real['mean_contrast']:+.3g}{unit}")  # fmt: skip
        else:
            first = captioned(tile(voxels, spacing, centre, window, tumour), "real, outlined")
        row = [first]
        for c, diameter in enumerate(diameters):
            model = LESION_MODELS.build(preset, diameter_mm=(diameter, diameter), contrast=(contrast, contrast),
                                        mass_effect_probability=0.0)  # fmt: skip
            result = simulate_lesions(image, torch.from_numpy(healthy), affine=np.asarray(image.affine),
                                      modality=modality, n=1, model=model, seed=10 * r + c)  # fmt: skip
            record = result.records[0]
            edited = result.image.numpy()[0].astype(np.float64)
            row.append(captioned(tile(edited, spacing, record.centre_voxel, window),
                                 f"medgan {diameter:.0f} mm {contrast:+.3g}{unit}"))  # fmt: skip
        rows.append(row)
    if learned is not None:
        rows.append(learned_row(learned, image, healthy, modality, spacing, preset, diameters, contrasts[0], window))
    width, height = rows[0][0].width, rows[0][0].height
    sheet = Image.new("RGB", (width * len(rows[0]) + 4 * (len(rows[0]) - 1), height * len(rows) + 4 * (len(rows) - 1)),
                      "white")  # fmt: skip
    for r, row in enumerate(rows):
        for c, part in enumerate(row):
            sheet.paste(part, (c * (width + 4), r * (height + 4)))
    path = os.path.join(ROOT, "docs", "figures", name)
    sheet.save(path, optimize=True)
    return path


def learned_row(learned, image, healthy, modality, spacing, preset, diameters, contrast, window) -> list:
    """The training tumour, then the first row's lesions painted by the case's learned model."""
    from benchmarks.lesion_realism import load_case, mr_scale, spacing_of
    from medgan.lesions.insert import simulate_lesions
    from medgan.lesions.learned import LearnedRenderer
    from medgan.lesions.models import LESION_MODELS

    seen = learned["trained_on"][0]
    other, other_tumour, _, other_healthy, _ = load_case(seen)
    other_voxels = other.numpy()[0].astype(np.float64)
    voxels = image.numpy()[0].astype(np.float64)
    if modality == "MR":  # shown in this case's window: the trained tumour brought to this scan's scale
        other_voxels *= mr_scale(other_voxels, other_healthy) / mr_scale(voxels, healthy)
    row = [captioned(tile(other_voxels, spacing_of(other), np.argwhere(other_tumour).mean(0), window,
                          other_tumour), f"trained on: {seen}, outlined")]  # fmt: skip
    renderer = LearnedRenderer(learned["checkpoint"])
    scale = mr_scale(voxels, healthy) if modality == "MR" else 1.0
    unit = "" if modality == "MR" else " HU"
    for c, diameter in enumerate(diameters):
        model = LESION_MODELS.build(preset, diameter_mm=(diameter, diameter), contrast=(contrast, contrast),
                                    mass_effect_probability=0.0)  # fmt: skip
        result = simulate_lesions(image * scale, torch.from_numpy(healthy), affine=np.asarray(image.affine),
                                  modality=modality, n=1, model=model, seed=c, renderer=renderer)  # fmt: skip
        edited = result.image.numpy()[0].astype(np.float64) / scale
        row.append(captioned(tile(edited, spacing, result.records[0].centre_voxel, window),
                             f"learned {diameter:.0f} mm {contrast:+.3g}{unit}"))  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learned", help="benchmarks/lesion_learned.py's manifest.json: add a learned row")
    args = parser.parse_args()
    models = {}
    if args.learned:
        with open(args.learned, encoding="utf-8") as fh:
            models = json.load(fh)["models"]
    torch.set_num_threads(1)
    for name, spec in FIGURES.items():
        print(figure(name, *spec, learned=models.get(spec[0])))


if __name__ == "__main__":
    main()
