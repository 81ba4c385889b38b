"""The first screen of a set evaluation's report.html: the verdict (is the generated set near its
real-vs-real floor, on which extractor), every extractor's numbers beside their floors, a few generated
samples, and the nearest-neighbour panels (generated samples beside their nearest training images), so
a reader sees copies and failures without trusting a number.
"""

from __future__ import annotations

import html

import numpy as np

from medgan.metrics.graphics import png_data_uri

__all__ = ["LEAD_STYLE", "floors_table", "lead_section"]

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
    lines = summary["lines"]
    verdict = summary["verdict"] or "none"
    headline, rest = (lines[0], lines[1:]) if lines else ("No feature metrics were computed.", [])
    leading = summary["extractor"]
    tags = ([leading] if leading else []) + [t for t in run.tags if t != leading]
    left = [
        f'<p class="verdict {verdict}">{html.escape(headline)}</p>',
        '<ul class="lines">' + "".join(f"<li>{html.escape(line)}</li>" for line in rest) + "</ul>",
    ]
    if tags:
        left += [
            "<p class='note'>generated / real-vs-real floor at equal sample sizes (ratio); separation: FD(real half, "
            "generated) / FD(real half, real half)</p>",
            floors_table(record, tags),
        ]
    n = len(run.fake.views)
    picks = np.unique(np.linspace(0, n - 1, min(LEAD_SAMPLES, n)).round().astype(int))
    names = [run.fake.images.name(int(i)) for i in picks]
    samples = "".join(_thumb(run.fake.views[i], name) for i, name in zip(picks, names, strict=True))
    below = f'<div><h3>Generated samples</h3><div class="small">{samples}</div></div><div>{_panels(record, run)}</div>'
    return "".join(left) + f'<div class="lead">{below}</div>'
