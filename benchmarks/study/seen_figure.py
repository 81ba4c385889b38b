"""The images-seen study's curves as one PNG (Pillow, which scikit-image brings): Fréchet distance and recall
against thousands of images seen, one line per seed, medgan in blue and the stock peer in red, the floor
dashed grey."""

from __future__ import annotations

from typing import Any

COLOURS = {"medgan": (31, 94, 180), "stock": (200, 40, 40)}
PANEL = (460, 320)  # pixels per panel
MARGIN = (62, 30, 20, 46)  # left, top, right, bottom


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def _panel(draw, origin: tuple[int, int], title: str, series: list[tuple[str, list[tuple[float, float]]]],
           floor: float | None, x_values: list[float], y_range: tuple[float, float]) -> None:  # fmt: skip
    """One chart: axes, ticks, a polyline per series, the floor as a dashed line."""
    left, top, right, bottom = MARGIN
    x0, y0 = origin[0] + left, origin[1] + top
    width, height = PANEL[0] - left - right, PANEL[1] - top - bottom
    x_high = max(x_values) * 1.05
    low, high = y_range

    def at(x: float, y: float) -> tuple[float, float]:
        return x0 + width * x / x_high, y0 + height * (1 - (y - low) / (high - low))

    draw.rectangle([x0, y0, x0 + width, y0 + height], outline=(0, 0, 0))
    draw.text((x0, origin[1] + 8), title, fill=(0, 0, 0))
    for y in _ticks(low, high):
        _, py = at(0, y)
        draw.line([x0 - 4, py, x0, py], fill=(0, 0, 0))
        draw.text((origin[0] + 4, py - 5), f"{y:.3g}", fill=(0, 0, 0))
    for x in x_values:
        px, _ = at(x, low)
        draw.line([px, y0 + height, px, y0 + height + 4], fill=(0, 0, 0))
        draw.text((px - 10, y0 + height + 8), f"{x:g}k", fill=(0, 0, 0))
    draw.text((x0 + width // 2 - 50, y0 + height + 26), "training images seen", fill=(0, 0, 0))
    if floor is not None and low <= floor <= high:
        _, py = at(0, floor)
        for px in range(int(x0), int(x0 + width), 10):
            draw.line([px, py, min(px + 5, x0 + width), py], fill=(120, 120, 120), width=2)
        draw.text((x0 + width - 70, py - 14), "floor", fill=(90, 90, 90))
    for kind, points in series:
        xy = [at(x, y) for x, y in points]
        if len(xy) > 1:
            draw.line(xy, fill=COLOURS[kind], width=2)
        for px, py in xy:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=COLOURS[kind])


def write_curves(path: str, report: dict[str, Any], tag: str) -> None:
    """FD and recall (extractor `tag`) against images seen, medgan and stock, one line per seed, beside the floor."""
    from PIL import Image, ImageDraw

    from medgan.io.atomic import atomic_file

    scores, floor = report["scores"], report["reference"]["floor"][tag]
    panels = {"fd": [], "recall": []}
    for kind in ("medgan", "stock"):
        for per_count in scores.get(kind, {}).values():
            for metric, lines in panels.items():
                done = [r for r in per_count.values() if "error" not in r]
                points = sorted((r["images_seen"] / 1000, r[tag][metric]) for r in done)
                if points:
                    lines.append((kind, points))
    planned = [p["images"] / 1000 for p in report.get("images_seen", {}).get("counts", [])]
    seen = [x for lines in panels.values() for _, points in lines for x, _ in points]
    # ticks at the counts asked for (the stock runs overshoot them by less than a batch); the axis ends 5% past
    xs = planned or sorted(set(seen)) or [1.0]
    fd_values = [y for _, points in panels["fd"] for _, y in points] + [floor["fd"]]
    image = Image.new("RGB", (2 * PANEL[0], PANEL[1] + 24), "white")
    draw = ImageDraw.Draw(image)
    _panel(draw, (0, 0), f"Frechet distance ({tag}), lower is better", panels["fd"], floor["fd"], xs,
           (0.0, max(fd_values) * 1.1))  # fmt: skip
    _panel(draw, (PANEL[0], 0), f"recall ({tag}), higher is better", panels["recall"], floor["recall"], xs,
           (0.0, 1.0))  # fmt: skip
    legend_y = PANEL[1] + 4
    for i, (kind, label) in enumerate((("medgan", "medgan (one line per seed)"), ("stock", "stock MONAI DCGAN"))):
        x = MARGIN[0] + i * 260
        draw.line([x, legend_y + 7, x + 24, legend_y + 7], fill=COLOURS[kind], width=3)
        draw.text((x + 30, legend_y), label, fill=(0, 0, 0))
    with atomic_file(path, overwrite=True, suffix=".png") as temp:
        image.save(temp, format="PNG")
