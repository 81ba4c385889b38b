"""What the study shows: the figure (real slices and every seed's first samples), the data summary and
the printed table."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import numpy as np
import torch


def write_figure(path: str, rows: list[torch.Tensor], per_row: int = 8, gap: int = 2) -> None:
    """A grey PNG grid: one row per set (images in 0..1), `gap` white pixels between images."""
    from medgan.io.png import to_uint8, write_png

    height, width = rows[0].shape[1:]
    grid = np.full((len(rows) * (height + gap) - gap, per_row * (width + gap) - gap), 255, np.uint8)
    for r, images in enumerate(rows):
        for c, image in enumerate(images[:per_row]):
            y, x = r * (height + gap), c * (width + gap)
            grid[y : y + height, x : x + width] = to_uint8(image.numpy(), 0.0, 1.0)
    write_png(grid, path, overwrite=True)


def data_summary(data: str, cfg) -> dict[str, Any]:
    """The data folder's subjects (from its manifest) and the config's slice filter."""
    summary: dict[str, Any] = {"folder": os.path.abspath(data)}
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(data, "manifest.json")) as fh:
            manifest = json.load(fh)
        summary["subjects"] = [
            {k: s.get(k) for k in ("subject", "package", "version", "license", "usable_axial_slices")}
            for s in manifest.get("subjects", [])
        ]
        summary["size_mb"] = manifest.get("size_mb")
    summary.update(
        image_size=cfg.data.image_size,
        spacing_mm=cfg.data.spacing_mm,
        slice_range=list(cfg.data.slice_range),
        min_foreground_fraction=cfg.data.min_foreground_fraction,
    )
    return summary


def _cell(value: Any, spec: str, width: int) -> str:
    if value is None:
        return "-".rjust(width)
    return f"{value:{spec}}".rjust(width) if isinstance(value, (int, float)) else str(value).rjust(width)


_COLUMNS = [
    ("", 10, ""),
    ("status", 7, ""),
    ("steps", 7, "d"),
    ("kimg", 6, ".1f"),
    ("ada p", 6, ".3f"),
    ("FD", 8, ".4g"),
    ("FD N/2", 8, ".4g"),
    ("to floor", 8, ".0%"),
    ("KID", 8, ".4f"),
    ("prec", 5, ".2f"),
    ("rec", 5, ".2f"),
    ("dens", 5, ".2f"),
    ("cov", 5, ".2f"),
    ("MS-SSIM", 7, ".3f"),
    ("NN", 4, "d"),
]


def _line(values: list[Any]) -> str:
    return " ".join(_cell(v, spec, w) for v, (_, w, spec) in zip(values, _COLUMNS, strict=True))


def _row(name: str, run: dict, result: dict, tag: str) -> str:
    """One table line: the run's training figures, then the scores (or why there are none)."""
    kimg = run["images_seen"] / 1000 if run.get("images_seen") is not None else "-"
    values: list[Any] = [name.ljust(10), run.get("status", "-"), run.get("steps", "-"), kimg, run.get("augment_p", "-")]
    if tag in result:
        m = result[tag]
        values += [
            m["fd"],
            m["fd_matched_half"]["fd"],
            m.get("fd_progress", "-"),
            m["kid"]["mean"],
            m["precision"],
            m["recall"],
            m["density"],
            m["coverage"],
            result["ms_ssim_diversity"]["fake"]["mean"],
            result["nearest_real"][tag]["distinct_real_slices"],
        ]
        v = result.get("verdict") or {}
        text = "-" if not v else ("COLLAPSE SUSPECTED" if v["mode_collapse"] else "no collapse")
    else:
        values += ["-"] * (len(_COLUMNS) - len(values))
        lines = str(run.get("log_tail") or result.get("error") or "").strip().splitlines()
        text = lines[-1][:90] if lines else "-"
    return _line(values) + "  " + text


def print_table(report: dict) -> None:
    """One line per seed (and the two reference points) on random_cnn features."""
    evaluation = report.get("evaluation", {})
    reference = evaluation.get("reference", {})
    tag = "random_cnn"
    rows = []
    if tag in reference.get("untrained_generator", {}):
        rows.append(("untrained", {}, reference["untrained_generator"]))
    for seed, run in report.get("runs", {}).items():
        rows.append((f"seed {seed}", run, evaluation.get("seeds", {}).get(seed, {})))
    for seed, run in report.get("stock_runs", {}).items():
        rows.append((f"stock {seed}", run, evaluation.get("stock", {}).get(seed, {})))
    print()
    print(" ".join(name.rjust(width) if name else " " * width for name, width, _ in _COLUMNS) + "  verdict")
    for name, run, result in rows:
        print(_row(name, run, result, tag))
    floor = reference.get("real_halves", {}).get(tag)
    if floor:
        values = ["real/real", "", "", "", "", "", floor["fd_mean"], "", floor["kid_mean"], floor["precision_mean"],
                  floor["recall_mean"], floor["density_mean"], floor["coverage_mean"],
                  reference["ms_ssim_diversity_real"]["mean"], ""]  # fmt: skip
        print(_line(values) + f"  floor: random halves of the real set, {floor['n_per_half']} slices")
    t = report.get("timing", {})
    print(
        f"{tag} features (untrained, fixed seed); FD N/2: real half vs as many samples, as the floor; to floor: "
        "log-scale share of the way from the untrained generator's FD N/2 to the floor; "
        "NN: distinct nearest real slices; stock: the MONAI DCGAN tutorial (64^2, upsampled to larger real slices)"
    )
    print(f"real slices {evaluation.get('n_real')}, {report.get('samples')} samples per seed, "
          f"{report.get('device_name')}, torch {report.get('torch')}; training {t.get('train_wall_s')} s wall, "
          f"evaluation {t.get('eval_s')} s, GPU minutes {t.get('gpu_minutes')}")  # fmt: skip
