"""Scores, the table and the before/after montage of the denoising study (benchmarks/denoise_study.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SOFT_TISSUE = (-160.0, 240.0)  # display window W400 / L40 (HU)
LUNG = (-1350.0, 150.0)  # display window W1500 / L-600 (HU)
GAP = 4  # pixels between tiles
PAIRS = (("medgan", "input"), ("medgan", "nlm"), ("nlm", "input"))  # (a, b): a's scores minus b's


def per_slice(clean: np.ndarray, test: np.ndarray, window: tuple[float, float]) -> dict[str, np.ndarray]:
    """PSNR (dB), SSIM and MAE (HU) of each `[N, 1, H, W]` slice against the clean one, both clipped to `window`
    (data range: its width)."""
    from medgan.metrics.image import mae, psnr, ssim

    reference = np.clip(clean.astype(np.float64), *window)
    compared = np.clip(test.astype(np.float64), *window)
    width = window[1] - window[0]
    return {
        "psnr": np.asarray(psnr(reference, compared, width, spatial_dims=2)).reshape(-1),
        "ssim": np.asarray(ssim(reference, compared, width, spatial_dims=2)).reshape(-1),
        "mae": np.asarray(mae(reference, compared, spatial_dims=2)).reshape(-1),
    }


def _spread(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}  # fmt: skip


def summarize(clean: np.ndarray, outputs: dict[str, np.ndarray], window: tuple[float, float]) -> dict[str, Any]:
    """Per method: every slice's scores and their spread; per pair of methods: the mean per-slice difference and
    on how many slices the first does better."""
    scores = {name: per_slice(clean, out, window) for name, out in outputs.items()}
    summary: dict[str, Any] = {"slices": len(clean), "methods": {}, "paired": {}}
    for name, metrics in scores.items():
        summary["methods"][name] = {m: {**_spread(v), "per_slice": [round(float(x), 5) for x in v]}
                                    for m, v in metrics.items()}  # fmt: skip
    for a, b in PAIRS:
        if a not in scores or b not in scores:
            continue
        pair = {}
        for m in ("psnr", "ssim", "mae"):
            diff = scores[a][m] - scores[b][m]
            better = diff < 0 if m == "mae" else diff > 0
            pair[m] = {"mean_difference": float(diff.mean()), "slices_better": int(better.sum())}
        summary["paired"][f"{a}_vs_{b}"] = pair
    return summary


def print_table(result: dict[str, Any]) -> None:
    scores, trained = result["scores"], result["medgan"]
    low, high = result["window_hu"]
    print(f"\nLow-dose CT denoising, held-out scan lung2: {scores['slices']} whole slices at dose {result['dose']:g}, "
          f"{result['data']['pixel_mm']} mm pixels, window [{low:g}, {high:g}] HU")  # fmt: skip
    print(f"medgan: {trained['steps']} steps, {trained['images_seen']} images in {trained['train_s']:.0f} s on "
          f"{result['machine']['device']}; NLM {result['nlm']['settings']}")  # fmt: skip
    print(f"{'method':8s} {'PSNR dB (sd)':>16s} {'SSIM (sd)':>18s} {'MAE HU (sd)':>16s}")
    for name, m in scores["methods"].items():
        print(f"{name:8s} {m['psnr']['mean']:9.2f} ({m['psnr']['sd']:4.2f}) {m['ssim']['mean']:10.4f} "
              f"({m['ssim']['sd']:.4f}) {m['mae']['mean']:9.2f} ({m['mae']['sd']:4.2f})")  # fmt: skip
    for pair, diff in scores["paired"].items():
        a, b = pair.split("_vs_")
        print(f"{a} - {b}: PSNR {diff['psnr']['mean_difference']:+.2f} dB ({diff['psnr']['slices_better']} of "
              f"{scores['slices']} slices better), SSIM {diff['ssim']['mean_difference']:+.4f} "
              f"({diff['ssim']['slices_better']}), MAE {diff['mae']['mean_difference']:+.2f} HU "
              f"({diff['mae']['slices_better']})")  # fmt: skip


def _row(tiles: list[np.ndarray]) -> np.ndarray:
    height = tiles[0].shape[0]
    gap = np.full((height, GAP), 255, np.uint8)
    parts = []
    for tile in tiles:
        parts += [tile, gap]
    return np.concatenate(parts[:-1], axis=1)


def _zoom(image: np.ndarray, factor: int = 3) -> np.ndarray:
    """The middle `1/factor` of the slice, shown `factor` times larger (pixel replication: no smoothing)."""
    h, w = image.shape
    side_h, side_w = h // factor, w // factor
    top, left = (h - side_h) // 2, (w - side_w) // 2
    return np.kron(image[top : top + side_h, left : left + side_w], np.ones((factor, factor), image.dtype))


def figure(clean: np.ndarray, outputs: dict[str, np.ndarray], where: list[dict[str, Any]], path: Path) -> str:
    """Columns noisy | NLM | medgan | clean. Rows: the middle scored slice (W400/L40), its middle third three times
    larger, and a slice three quarters up the scan in the lung window (W1500/L-600). Slices shown as radiologists
    view them: anterior at the top, the patient's right on the left."""
    from medgan.io.png import to_uint8, write_png

    columns = [outputs["input"], outputs["nlm"], outputs["medgan"], clean]
    first, second = len(clean) // 2, (3 * len(clean)) // 4

    def display(volume: np.ndarray, index: int) -> np.ndarray:
        return volume[index, 0].T[::-1, ::-1]  # RAS [x, y]: rows anterior first, columns the patient's right first

    rows = [
        _row([to_uint8(display(c, first), *SOFT_TISSUE) for c in columns]),
        _row([to_uint8(_zoom(display(c, first)), *SOFT_TISSUE) for c in columns]),
        _row([to_uint8(display(c, second), *LUNG) for c in columns]),
    ]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1])), constant_values=255) for r in rows]
    gap = np.full((GAP, width), 255, np.uint8)
    pixels = np.concatenate([rows[0], gap, rows[1], gap, rows[2]], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_png(pixels, path, overwrite=True)
