"""The first screen of a set evaluation's report.html: the verdict (is the generated set near its
real-vs-real floor, on which extractor), every extractor's numbers beside their floors, a few generated
samples, and the nearest-neighbour panels (generated samples beside their nearest training images), so
a reader sees copies and failures without trusting a number.
"""

from __future__ import annotations

import html
import math

import numpy as np

from medgan.metrics.graphics import png_data_uri

__all__ = ["LEAD_STYLE", "floors_table", "lead_section", "separation_svg"]

LEAD_SAMPLES = 8  # generated thumbnails on the first screen
LEAD_STYLE = """.lead{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.lead>div:first-child{flex:0 0 360px}.lead>div:last-child{flex:1 1 600px}
.verdict{font-size:17px;font-weight:600;padding:8px 12px;border-radius:4px;margin:0 0 8px}
.verdict.near{background:#e6f4ea;color:#1e5e2f}.verdict.far{background:#fdecea;color:#8a1c12}
.verdict.none{background:#f1f1f1;color:#333}.lines{font-size:13px;margin:4px 0 10px;padding-left:18px}
.small{display:flex;flex-wrap:wrap;gap:3px}.small figure{margin:0;font-size:9px;text-align:center;width:84px;
overflow:hidden;white-space:nowrap}.small img{width:84px;height:84px;image-rendering:pixelated;display:block}
.panel{display:inline-flex;gap:3px;margin:0 10px 6px 0;padding:3px;border:1px solid #ddd}
.panel.flagged{border:2px solid #c00}"""


def _thumb(image: np.ndarray, caption: str, detail: str = "") -> str:
    label = html.escape(caption)
    second = f"<br>{html.escape(detail)}" if detail else ""
    return (
        f'<figure><img alt="{label}" title="{label}" src="{png_data_uri(image)}">'
        f"<figcaption>{label}{second}</figcaption></figure>"
    )


def _pair(entry: dict | None, digits: int = 3, std: bool = False) -> str:
    if not entry:
        return "-"
    generated, floor = f"{entry['generated']:.{digits}g}", f"{entry['floor']:.{digits}g}"
    if std:
        generated += f" ± {entry['generated_std']:.2g}"
        floor += f" ± {entry['floor_std']:.2g}"
    ratio = f" ({entry['ratio']:.2f}x)" if entry.get("ratio") is not None and not std else ""
    return f"{generated} / {floor}{ratio}"


def floors_table(record: dict, tags: list[str]) -> str:
    """One row per extractor: its separation and each distribution metric as generated / floor (ratio)."""
    metrics, separation = record["metrics"], record.get("extractor_separation", {})
    head = ("extractor", "separation", "FD", "KID", "precision", "recall", "density", "coverage")
    rows = [f"<tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>"]
    for tag in tags:
        sep = separation.get(tag) or {}
        cells = [
            html.escape(tag),
            f"{sep['ratio']:.2f}x" if sep.get("ratio") is not None else "-",
            _pair(metrics.get(f"fd_{tag}_floor")),
            _pair(metrics.get(f"kid_{tag}_floor"), 2, std=True),
            *(_pair(metrics.get(f"{m}_{tag}_floor"), 2) for m in ("precision", "recall", "density", "coverage")),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    intensity = metrics.get("intensity_w1_floor")
    note = (
        f"<p class='note'>intensity distance: {_pair(intensity)} {html.escape(intensity['units'])}</p>"
        if intensity
        else ""
    )
    return f"<table>{''.join(rows)}</table>{note}"


def separation_svg(separation: dict, tags: list[str]) -> str:
    """The extractor-separation figure: one row per extractor on a log axis of FD relative to the gap between two
    real halves, a blue dot at 1 (real half against real half) joined to a red dot at the generated set's
    ratio. The further right the red dot, the more the extractor sees what separates the generated set from real
    data; a red dot near the blue one means the extractor cannot tell them apart. Empty without separations."""
    rows = [(t, separation[t]) for t in tags if (separation.get(t) or {}).get("ratio") is not None]
    if not rows:
        return ""
    width, left, right, row_h, top = 360, 128, 34, 30, 22
    high = math.log10(max(10.0, 1.5 * max(max(r["ratio"], 1.0) for _, r in rows)))
    low = math.log10(min(0.5, 0.8 * min(r["ratio"] for _, r in rows)))

    def sx(value: float) -> float:
        return left + (math.log10(max(value, 10**low)) - low) / (high - low) * (width - left - right)

    height = top + row_h * len(rows) + 34
    parts = []
    for tick in (t for e in range(math.floor(low), math.ceil(high) + 1) for t in (10**e,) if low <= e <= high):
        x = sx(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" y2="{height - 30}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 18}" font-size="10" text-anchor="middle">{tick:g}x</text>')
    for i, (tag, sep) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        x0, x1 = sx(1.0), sx(sep["ratio"])
        parts += [
            f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{html.escape(tag)}</text>',
            f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#999" stroke-width="2"/>',
            f'<circle cx="{x0:.1f}" cy="{y:.1f}" r="5" fill="#1f77b4"><title>FD(real half, real half) '
            f"{sep['real_halves_fd']:.4g}</title></circle>",
            f'<circle cx="{x1:.1f}" cy="{y:.1f}" r="5" fill="#d62728"><title>FD(real half, generated) '
            f"{sep['real_generated_fd']:.4g}</title></circle>",
            f'<text x="{min(x1 + 8, width - right):.1f}" y="{y - 7:.1f}" font-size="10">{sep["ratio"]:.3g}x</text>',
        ]
    parts.append(
        f'<text x="{left + (width - left - right) / 2}" y="{height - 4}" font-size="11" text-anchor="middle">'
        "FD / FD(real half, real half)</text>"
    )
    body = "".join(parts)
    return (
        f'<svg class="separation" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{body}</svg>'
    )


def _panels(record: dict, run) -> str:
    panels = record.get("nearest_training")
    if panels is None:
        return (
            "<h3>Nearest training images</h3><p class='note'>Give the training set (--train) to see each generated "
            "sample beside its nearest training images.</p>"
        )
    tag = html.escape(record["summary"]["extractor"])
    parts = [
        f"<h3>Nearest training images (pixel NCC; {tag} features)</h3>",
        "<p class='note'>Each panel: a generated sample, its nearest training image by pixel correlation, and "
        "by features when that is another image. Red: flagged near-copy.</p>",
    ]
    for p in panels:
        figures = [
            _thumb(run.fake.views[p["fake_index"]], p["fake"], "near-copy" if p["flagged"] else "generated"),
            _thumb(run.train.views[p["pixel_index"]], p["pixel_match"], f"NCC {p['ncc']:.3f}"),
        ]
        if p["feature_index"] != p["pixel_index"]:
            figures.append(_thumb(run.train.views[p["feature_index"]], p["feature_match"], "nearest by features"))
        data = (
            f'data-fake="{html.escape(p["fake"])}" data-pixel-match="{html.escape(p["pixel_match"])}" '
            f'data-feature-match="{html.escape(p["feature_match"])}"'
        )
        flagged = " flagged" if p["flagged"] else ""
        parts.append(f'<div class="panel small{flagged}" {data}>{"".join(figures)}</div>')
    return "".join(parts)


def lead_section(record: dict, run) -> str:
    """The report's first screen (see the module docstring)."""
    summary = record["summary"]
    verdict = summary["verdict"] or "none"
    leading = summary["extractor"]
    tags = ([leading] if leading else []) + [t for t in run.tags if t != leading]
    top = [
        f'<p class="verdict {verdict}">{html.escape(summary["headline"])}</p>',
        '<ul class="lines">' + "".join(f"<li>{html.escape(line)}</li>" for line in summary["notes"]) + "</ul>",
    ]
    if tags:
        top += [
            "<p class='note'>generated / real-vs-real floor at equal sample sizes (ratio); separation: FD(real half, "
            "generated) / FD(real half, real half)</p>",
            floors_table(record, tags),
        ]
    n = len(run.fake.views)
    picks = np.unique(np.linspace(0, n - 1, min(LEAD_SAMPLES, n)).round().astype(int))
    names = [run.fake.images.name(int(i)) for i in picks]
    samples = "".join(_thumb(run.fake.views[i], name) for i, name in zip(picks, names, strict=True))
    figure = separation_svg(record.get("extractor_separation", {}), tags)
    if figure:
        figure = (
            f"<h3>Extractor separation</h3>{figure}<p class='note'>Blue: two real halves (1x); red: a real half "
            "against the generated set. Further right: the extractor sees more of what sets the generated set apart."
            "</p>"
        )
    left = f'<div><h3>Generated samples</h3><div class="small">{samples}</div>{figure}</div>'
    return "".join(top) + f'<div class="lead">{left}<div>{_panels(record, run)}</div></div>'
