"""metrics.json and a self-contained report.html (no external files, scripts or fonts).

The report of a set evaluation opens with its summary (`medgan.metrics.report_lead`): the verdict
against the real-vs-real floor, each extractor's numbers beside their floors, and generated samples
beside their nearest training images. Below, it shows what the numbers summarise: sample grids of
real and generated images (middle slices for 3D), intensity histograms in physical units, the
precision/recall and density/coverage points beside their floors, and, with a training set, the
most suspicious generated samples beside their nearest training images.
"""

from __future__ import annotations

import html
import json
import math
import os
from typing import Any

import numpy as np

from medgan.io.atomic import atomic_dir
from medgan.metrics.graphics import COLOURS, histogram_svg, png_data_uri, scatter_svg
from medgan.metrics.report_lead import LEAD_STYLE, lead_section

__all__ = ["json_ready", "write_pairs_report", "write_set_report"]

GRID_SAMPLES = 16
SUSPECTS_SHOWN = 8
_STYLE = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1250px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:4px}.grid figure{margin:0;font-size:10px;text-align:center;width:128px}
.grid img{width:128px;height:128px;image-rendering:pixelated;display:block}
.warn{color:#a40}.note{color:#555;font-size:13px}.flag{color:#c00;font-weight:bold}"""


def json_ready(value: Any) -> Any:
    """Plain JSON: numpy scalars to Python, non-finite floats to the strings "inf", "-inf", "nan"."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _write(out: str | os.PathLike, record: dict, page: str, overwrite: bool) -> None:
    with atomic_dir(out, overwrite=overwrite) as folder:
        with open(os.path.join(folder, "metrics.json"), "w", encoding="utf-8") as fh:
            json.dump(json_ready(record), fh, indent=2, allow_nan=False)
            fh.write("\n")
        with open(os.path.join(folder, "report.html"), "w", encoding="utf-8") as fh:
            fh.write(page)


def _page(title: str, sections: list[str]) -> str:
    body = "\n".join(sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}\n{LEAD_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        parts = [
            f"{html.escape(str(k))} ({_format(v)})" if isinstance(v, dict) else f"{html.escape(str(k))} {_format(v)}"
            for k, v in value.items()
            if not isinstance(v, list)
        ]
        return ", ".join(parts)
    return html.escape(str(value))


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{_format(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _figure(image: np.ndarray, caption: str) -> str:
    label = html.escape(caption)
    return f'<figure><img alt="{label}" src="{png_data_uri(image)}"><figcaption>{label}</figcaption></figure>'


def _grid(views: np.ndarray, names: list[str]) -> str:
    picks = np.unique(np.linspace(0, len(views) - 1, min(GRID_SAMPLES, len(views))).round().astype(int))
    return '<div class="grid">' + "".join(_figure(views[i], names[i]) for i in picks) + "</div>"


def _warnings(record: dict) -> str:
    items = record.get("warnings") or []
    if not items:
        return ""
    return "<h2>Warnings</h2><ul>" + "".join(f'<li class="warn">{html.escape(w)}</li>' for w in items) + "</ul>"


def write_set_report(out: str | os.PathLike, record: dict, run, overwrite: bool = False) -> None:
    """Write metrics.json and report.html for a real-vs-generated evaluation."""
    metrics = record["metrics"]
    extractors = record.get("extractors", {})
    sections = [
        lead_section(record, run),
        '<p class="note">Feature-based numbers carry the extractor\'s name; they are not comparable with '
        "published Inception FID values, nor with numbers from another extractor or sample size. Each floor is "
        "the same metric between two real sets at the generated comparison's sample sizes.</p>",
        "<h2>Metrics</h2>",
        _table([(k, v) for k, v in metrics.items() if not k.startswith("memorization") and not k.endswith("_floor")]),
    ]
    if record.get("floor"):
        floors = [(k.removesuffix("_floor"), v) for k, v in metrics.items() if k.endswith("_floor")]
        sections += ["<h2>Real-vs-real floors</h2>", _table(list(record["floor"].items()) + floors)]
    if record.get("extractor_separation"):
        sections += ["<h2>Extractor separation</h2>", _table(list(record["extractor_separation"].items()))]
    for tag, described in extractors.items():
        sections += [f"<h2>Extractor {html.escape(tag)}</h2>", _table(list(described.items()))]
    inputs = [
        (f"{role} set", f"{d['count']} images, {d['spatial_dims']}D, {d['folder']}")
        for role, d in record["inputs"].items()
    ]
    sections += ["<h2>Inputs and normalisation</h2>", _table(inputs + list(record["normalisation"].items()))]
    sections.append(_warnings(record))
    names = {role: [d.images.name(i) for i in range(len(d.images))] for role, d in _sets(run)}
    sections.append("<h2>Samples (middle slice in 3D, window-normalised)</h2>")
    for role, data in _sets(run):
        if role in ("real", "fake"):
            sections += [f"<h3>{role}</h3>", _grid(data.views, names[role])]
    series = [(role, d.values, COLOURS[role]) for role, d in _sets(run) if role in ("real", "fake")]
    window = record["normalisation"]
    low = min(window["low"], *(float(np.quantile(v, 0.001)) for _, v, _ in series))
    high = max(window["high"], *(float(np.quantile(v, 0.999)) for _, v, _ in series))
    sections += [
        "<h2>Intensity histograms</h2>",
        histogram_svg(series, f"intensity ({run.options['units']})", value_range=(low, high)),
    ]
    sections += _prdc_sections(metrics, run.tags)
    leading = record["summary"]["extractor"]
    if leading in run.memorization:
        sections.append(_memorization_section(run, leading, names, metrics))
    _write(out, record, _page("medgan evaluation: real vs generated", sections), overwrite)


def _prdc_sections(metrics: dict, tags: list[str]) -> list[str]:
    """Precision against recall and density against coverage: the generated set, and its real-vs-real floor."""
    sections = []
    for tag in tags:
        if f"precision_{tag}" not in metrics:
            continue
        pr = [("fake", metrics[f"recall_{tag}"], metrics[f"precision_{tag}"], COLOURS["fake"])]
        dc = [("fake", metrics[f"coverage_{tag}"], metrics[f"density_{tag}"], COLOURS["fake"])]
        if f"precision_{tag}_floor" in metrics:
            floor = {m: metrics[f"{m}_{tag}_floor"]["floor"] for m in ("precision", "recall", "density", "coverage")}
            pr.append(("real vs real", floor["recall"], floor["precision"], COLOURS["real"]))
            dc.append(("real vs real", floor["coverage"], floor["density"], COLOURS["real"]))
        top = max(1.5, 1.1 * max(d for _, _, d, _ in dc))
        sections += [
            f"<h2>Precision / recall and density / coverage ({html.escape(tag)}, k = {metrics['prdc_nearest_k']})</h2>",
            scatter_svg(pr, "recall", "precision"),
            scatter_svg(dc, "coverage", "density", y_range=(0.0, top)),
        ]
    return sections


def _sets(run):
    return [(role, d) for role, d in (("real", run.real), ("fake", run.fake), ("train", run.train)) if d is not None]


def _memorization_section(run, tag: str, names, metrics: dict) -> str:
    result, summary = run.memorization[tag], metrics[f"memorization_{tag}"]
    others = [
        f"{t}: {metrics[f'memorization_{t}']['flagged']}" for t in run.memorization if t != tag
    ]  # the flags of the other extractors' feature spaces
    heldout_ratio = result.heldout_feature_distance / max(float(np.median(result.heldout_feature_distance)), 1e-300)
    parts = [
        f"<h2>Memorization ({html.escape(tag)})</h2>",
        f"<p>{summary['flagged']} of {summary['samples']} generated samples flagged as near-copies "
        f"({100 * summary['fraction_flagged']:.2f}%); reference: {summary['heldout_samples']} held-out real images "
        f"(the real set).{' Flagged with the other extractors: ' + html.escape(', '.join(others)) if others else ''}"
        "</p>",
        histogram_svg(
            [
                ("held-out real", np.clip(heldout_ratio, 0, 3), COLOURS["heldout"]),
                ("generated", np.clip(result.feature_ratio, 0, 3), COLOURS["fake"]),
            ],
            "feature distance to nearest training sample / median held-out",
            bins=60,
            value_range=(0.0, 3.0),
            log_y=False,
            y_label="fraction of samples",
        ),
        "<h3>Most suspicious generated samples and their nearest training images (pixel NCC)</h3>",
        "<table><tr><th>generated</th><th>nearest training</th><th>NCC</th><th>feature ratio</th><th></th></tr>",
    ]
    for i in result.suspicion_order()[:SUSPECTS_SHOWN]:
        match = int(result.pixel_match[i])
        flag = '<span class="flag">near-copy</span>' if result.flagged[i] else ""
        parts.append(
            f'<tr><td><div class="grid">{_figure(run.fake.views[i], names["fake"][i])}</div></td>'
            f'<td><div class="grid">{_figure(run.train.views[match], names["train"][match])}</div></td>'
            f"<td>{result.pixel_correlation[i]:.4f}</td><td>{result.feature_ratio[i]:.3f}</td><td>{flag}</td></tr>"
        )
    parts.append("</table>")
    return "\n".join(parts)


def write_pairs_report(out: str | os.PathLike, record: dict, views: list, overwrite: bool = False) -> None:
    """Write metrics.json and report.html for paired (enhancement) metrics."""
    summary_rows = [(name, stats) for name, stats in record["summary"].items()]
    sections = [
        "<h2>Summary over pairs</h2>",
        _table(summary_rows),
        _table(
            [
                ("data_range", record["data_range"]),
                ("clip window", record["clip_window"]),
                ("range source", record["range_source"]),
            ]
        ),
        _warnings(record),
    ]
    order_key = "ssim" if "ssim" in record["metrics_computed"] else record["metrics_computed"][0]
    scores = [p.get(order_key) for p in record["pairs"]]
    lower_is_worse = order_key in ("psnr", "ssim", "ms_ssim")
    ranked = sorted(range(len(scores)), key=lambda i: (scores[i] is None, scores[i] if lower_is_worse else -scores[i]))
    sections.append(f"<h2>Worst pairs by {html.escape(order_key)}: reference, test, |difference| x4</h2>")
    for i in ranked[:SUSPECTS_SHOWN]:
        v = views[i]
        sections.append(
            f'<div class="grid">{_figure(v.reference, "reference")}{_figure(v.test, v.name)}'
            f"{_figure(v.difference, f'{order_key} {_format(scores[i])}')}</div>"
        )
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{_format(p.get(m))}</td>" for m in record["metrics_computed"])
        + f"<td>{html.escape(os.path.basename(p['test']))}</td></tr>"
        for p in record["pairs"]
    )
    header = "".join(f"<th>{html.escape(m)}</th>" for m in record["metrics_computed"])
    sections += ["<h2>All pairs</h2>", f"<table><tr>{header}<th>test</th></tr>{rows}</table>"]
    _write(out, record, _page("medgan evaluation: paired metrics", sections), overwrite)
