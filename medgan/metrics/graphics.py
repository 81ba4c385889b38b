"""Pictures for a self-contained HTML report, with no plotting or imaging library:
8-bit grey PNGs (`medgan.io.png`, embedded as base64 data URIs) and small inline SVG charts."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

import numpy as np

from medgan.io.png import encode_png

__all__ = ["COLOURS", "histogram_svg", "png_data_uri", "scatter_svg"]

COLOURS = {"real": "#1f77b4", "fake": "#d62728", "train": "#2ca02c", "heldout": "#1f77b4"}
_W, _H, _PAD_L, _PAD_B, _PAD_T, _PAD_R = 420, 260, 52, 40, 14, 12


def png_data_uri(image: np.ndarray) -> str:
    """A 2-D uint8 array as a PNG data URI, for an <img> inside a self-contained HTML page."""
    png = encode_png(np.ascontiguousarray(image, dtype=np.uint8))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not high > low:
        return [low]
    raw = (high - low) / count
    step = 10 ** np.floor(np.log10(raw))
    step *= min((m for m in (1, 2, 5, 10) if m * step >= raw), default=10)
    first = np.ceil(low / step) * step
    return [float(v) for v in np.arange(first, high + step * 1e-9, step)]


def _frame(x_range, y_range, x_label: str, y_label: str) -> tuple[list[str], callable, callable]:
    (x0, x1), (y0, y1) = x_range, y_range
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B

    def sx(v):
        return _PAD_L + (v - x0) / ((x1 - x0) or 1) * plot_w

    def sy(v):
        return _PAD_T + plot_h - (v - y0) / ((y1 - y0) or 1) * plot_h

    parts = [f'<rect x="{_PAD_L}" y="{_PAD_T}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for t in _nice_ticks(x0, x1):
        parts.append(f'<text x="{sx(t):.1f}" y="{_H - _PAD_B + 14}" font-size="10" text-anchor="middle">{t:g}</text>')
    for t in _nice_ticks(y0, y1, 4):
        parts.append(f'<text x="{_PAD_L - 4}" y="{sy(t) + 3:.1f}" font-size="10" text-anchor="end">{t:g}</text>')
        parts.append(f'<line x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#eee"/>')
    parts.append(
        f'<text x="{_PAD_L + plot_w / 2}" y="{_H - 6}" font-size="11" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
    )
    parts.append(
        f'<text x="12" y="{_PAD_T + plot_h / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {_PAD_T + plot_h / 2})">{html.escape(y_label)}</text>'
    )
    return parts, sx, sy


def _svg(parts: list[str], legend: Sequence[tuple[str, str]]) -> str:
    for i, (label, colour) in enumerate(legend):
        y = _PAD_T + 12 + 14 * i
        parts.append(f'<rect x="{_W - _PAD_R - 110}" y="{y - 8}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{_W - _PAD_R - 96}" y="{y + 1}" font-size="11">{html.escape(label)}</text>')
    body = "".join(parts)
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}">{body}</svg>'


def histogram_svg(
    series: Sequence[tuple[str, np.ndarray, str]],  # (label, values, colour)
    x_label: str,
    bins: int = 100,
    value_range: tuple[float, float] | None = None,
    log_y: bool = True,  # background voxels dwarf tissue; a log axis shows both
    y_label: str = "fraction of voxels",
) -> str:
    """Overlaid normalised histograms as step lines."""
    finite = [v[np.isfinite(v)] for _, v, _ in series]
    if value_range is None:
        value_range = (min(float(v.min()) for v in finite), max(float(v.max()) for v in finite))
    low, high = value_range
    high = high if high > low else low + 1.0
    edges = np.linspace(low, high, bins + 1)
    densities = [np.histogram(v, bins=edges)[0] / max(v.size, 1) for v in finite]
    floor = 1e-6
    transformed = [np.log10(np.maximum(d, floor)) if log_y else d for d in densities]
    y_low = np.log10(floor) if log_y else 0.0
    y_high = max(float(t.max()) for t in transformed)
    y_high = y_high + 0.05 * (y_high - y_low) if y_high > y_low else y_low + 1  # headroom above the tallest bin
    parts, sx, sy = _frame((low, high), (y_low, y_high), x_label, f"log10 {y_label}" if log_y else y_label)
    for (_, _, colour), t in zip(series, transformed, strict=True):
        points = []
        for i, value in enumerate(t):
            points += [f"{sx(edges[i]):.1f},{sy(value):.1f}", f"{sx(edges[i + 1]):.1f},{sy(value):.1f}"]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.3" points="{" ".join(points)}"/>')
    return _svg(parts, [(label, colour) for label, _, colour in series])


def scatter_svg(
    points: Sequence[tuple[str, float, float, str]],  # (label, x, y, colour)
    x_label: str,
    y_label: str,
    x_range: tuple[float, float] = (0.0, 1.0),
    y_range: tuple[float, float] = (0.0, 1.0),
) -> str:
    """Labelled points in a box (precision against recall, density against coverage)."""
    parts, sx, sy = _frame(x_range, y_range, x_label, y_label)
    for label, x, y, colour in points:
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{colour}"/>')
        right = x > x_range[0] + 0.75 * (x_range[1] - x_range[0])  # keep labels inside the frame
        anchor, dx = ("end", -8) if right else ("start", 8)
        parts.append(
            f'<text x="{sx(x) + dx:.1f}" y="{sy(y) + 14:.1f}" font-size="10" text-anchor="{anchor}">'
            f"{html.escape(label)} ({x:.3g}, {y:.3g})</text>"
        )
    return _svg(parts, [])
