"""The images-seen study's curves as one PNG (Pillow, which scikit-image brings): Fréchet distance and recall
against thousands of images seen, one line per seed, medgan in blue, the stock peer in red, the runs of any
variant reports (the same study with other settings) in green, then orange, purple and teal, the floor dashed
grey. `compare_rows` puts the same numbers in a table: per count, each kind's mean over its seeds and every
seed's own figure."""

from __future__ import annotations

import math
from typing import Any

COLOURS = {"medgan": (31, 94, 180), "stock": (200, 40, 40), "variant": (20, 140, 70)}
VARIANT_COLOURS = [(20, 140, 70), (230, 130, 0), (130, 60, 170), (0, 150, 160)]  # green, then orange, purple, teal
for _i, _colour in enumerate(VARIANT_COLOURS):
    COLOURS[f"variant{_i}"] = _colour
PANEL = (460, 320)  # pixels per panel
MARGIN = (62, 30, 20, 46)  # left, top, right, bottom


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """Ticks from 0 to at least `high` at a round step (1, 2, 2.5 or 5 times a power of ten)."""
    if not high > 0:
        return [0.0, 1.0]
    raw = high / (count - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return [step * i for i in range(math.ceil(high / step - 1e-9) + 1)]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable font since Pillow 10.1
    except TypeError:
        return ImageFont.load_default()


def _panel(draw, origin: tuple[int, int], title: str, series: list[tuple[str, list[tuple[float, float]]]],
           floor: float | None, x_values: list[float], ticks: list[float]) -> None:  # fmt: skip
    """One chart: axes, ticks, a polyline per series, the floor as a dashed line."""
    left, top, right, bottom = MARGIN
    x0, y0 = origin[0] + left, origin[1] + top
    width, height = PANEL[0] - left - right, PANEL[1] - top - bottom
    x_high = max(x_values) * 1.05
    low, high = ticks[0], ticks[-1]
    font = _font(12)

    def at(x: float, y: float) -> tuple[float, float]:
        return x0 + width * x / x_high, y0 + height * (1 - (y - low) / (high - low))

    draw.rectangle([x0, y0, x0 + width, y0 + height], outline=(0, 0, 0))
    draw.text((x0, origin[1] + 8), title, fill=(0, 0, 0), font=font)
    for y in ticks:
        _, py = at(0, y)
        draw.line([x0 - 4, py, x0, py], fill=(0, 0, 0))
        draw.text((x0 - 8, py), f"{y:g}", fill=(0, 0, 0), font=font, anchor="rm")
    for x in x_values:
        px, _ = at(x, low)
        draw.line([px, y0 + height, px, y0 + height + 4], fill=(0, 0, 0))
        draw.text((px, y0 + height + 8), f"{x:g}k", fill=(0, 0, 0), font=font, anchor="mt")
    draw.text((x0 + width // 2, y0 + height + 26), "training images seen", fill=(0, 0, 0), font=font, anchor="mt")
    if floor is not None and low <= floor <= high:
        _, py = at(0, floor)
        for px in range(int(x0), int(x0 + width), 10):
            draw.line([px, py, min(px + 5, x0 + width), py], fill=(120, 120, 120), width=2)
        draw.text((x0 + 6, py - 4), "floor", fill=(90, 90, 90), font=font, anchor="lb")
    for kind, points in series:
        xy = [at(x, y) for x, y in points]
        if len(xy) > 1:
            draw.line(xy, fill=COLOURS[kind], width=2)
        for px, py in xy:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=COLOURS[kind])


def _lines(report: dict[str, Any], kind: str, tag: str, metric: str) -> list[list[tuple[float, float]]]:
    """One line per seed of `kind`: (thousands of images seen, the metric), scored checkpoints only."""
    lines = []
    for per_count in report.get("scores", {}).get(kind, {}).values():
        done = [r for r in per_count.values() if "error" not in r]
        points = sorted((r["images_seen"] / 1000, r[tag][metric]) for r in done)
        if points:
            lines.append(points)
    return lines


def _variant(i: int) -> str:
    """The colour key of the i-th variant (the palette repeats after four)."""
    return f"variant{i % len(VARIANT_COLOURS)}"


def write_curves(path: str, report: dict[str, Any], tag: str, variants: dict[str, dict[str, Any]] | None = None,
                 base_label: str = "medgan (one line per seed)") -> None:  # fmt: skip
    """FD and recall (extractor `tag`) against images seen, medgan and stock, one line per seed, beside the floor;
    each of `variants` ({label: report of the same study with other settings}) adds its medgan seeds in a colour of
    its own (the first green)."""
    from PIL import Image, ImageDraw

    from medgan.io.atomic import atomic_file

    floor = report["reference"]["floor"][tag]
    variants = variants or {}
    for label, other in variants.items():
        other_floor = other["reference"]["floor"][tag]["fd"]
        if not math.isclose(other_floor, floor["fd"], rel_tol=1e-6):
            raise SystemExit(f"variant {label}: its floor FD {other_floor:.6g} is not the base report's "
                             f"{floor['fd']:.6g} (another split, extractor or sample size)")  # fmt: skip
    panels: dict[str, list[tuple[str, list[tuple[float, float]]]]] = {}
    for metric in ("fd", "recall"):
        panels[metric] = [(k, line) for k in ("medgan", "stock") for line in _lines(report, k, tag, metric)]
        panels[metric] += [(_variant(i), line) for i, other in enumerate(variants.values())
                           for line in _lines(other, "medgan", tag, metric)]  # fmt: skip
    planned = [p["images"] / 1000 for p in report.get("images_seen", {}).get("counts", [])]
    seen = [x for lines in panels.values() for _, points in lines for x, _ in points]
    # ticks at the counts asked for (the stock runs overshoot them by less than a batch); the axis ends 5% past
    xs = planned or sorted(set(seen)) or [1.0]
    fd_high = max([y for _, points in panels["fd"] for _, y in points] + [floor["fd"]])
    drawn = {kind for lines in panels.values() for kind, _ in lines}  # no stock entry for a study without stock
    legend = [(k, label) for k, label in (("medgan", base_label), ("stock", "stock MONAI DCGAN")) if k in drawn]
    legend += [(_variant(i), f"medgan, {label}") for i, label in enumerate(variants)]
    image = Image.new("RGB", (2 * PANEL[0], PANEL[1] + 24 * math.ceil(len(legend) / 2)), "white")
    draw = ImageDraw.Draw(image)
    _panel(draw, (0, 0), f"Frechet distance ({tag}), lower is better", panels["fd"], floor["fd"], xs,
           nice_ticks(fd_high * 1.05))  # fmt: skip
    _panel(draw, (PANEL[0], 0), f"recall ({tag}), higher is better", panels["recall"], floor["recall"], xs,
           nice_ticks(1.0))  # fmt: skip
    for i, (kind, label) in enumerate(legend):
        x, y = MARGIN[0] + (i % 2) * PANEL[0], PANEL[1] + 4 + 24 * (i // 2)
        draw.line([x, y + 7, x + 24, y + 7], fill=COLOURS[kind], width=3)
        draw.text((x + 30, y), label, fill=(0, 0, 0), font=_font(12))
    with atomic_file(path, overwrite=True, suffix=".png") as temp:
        image.save(temp, format="PNG")


def compare_rows(reports: dict[str, tuple[dict[str, Any], str]], tag: str) -> list[dict[str, Any]]:
    """Per (label, count): the mean over seeds and every seed's FD / floor, precision and recall (extractor `tag`).
    `reports` maps a label to (report, kind): e.g. {"as shipped": (r, "medgan"), "stock": (r, "stock")}."""
    rows = []
    for label, (report, kind) in reports.items():
        per_seed = report.get("scores", {}).get(kind, {})
        counts = sorted({int(c) for per_count in per_seed.values() for c in per_count})
        for count in counts:
            scored = {int(s): per_count[str(count)][tag] for s, per_count in per_seed.items()
                      if "error" not in per_count.get(str(count), {"error": "missing"})}  # fmt: skip
            if not scored:
                continue
            row: dict[str, Any] = {"label": label, "images": count, "seeds": sorted(scored)}
            for metric in ("fd_over_floor", "precision", "recall"):
                values = [scored[s][metric] for s in sorted(scored)]
                row[metric] = {"mean": sum(values) / len(values), "values": values}
            rows.append(row)
    return rows


def print_compare(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'run':<30} {'images':>7}  {'FD/floor mean (seeds)':<30} {'precision':<24} {'recall':<24}")
    for row in rows:
        cells = [f"{row[m]['mean']:.2f} (" + ", ".join(f"{v:.2f}" for v in row[m]["values"]) + ")"
                 for m in ("fd_over_floor", "precision", "recall")]  # fmt: skip
        print(f"{row['label']:<30} {row['images']:>7}  {cells[0]:<30} {cells[1]:<24} {cells[2]:<24}")
