"""The summary a set evaluation leads with: how far the generated set is from its real-vs-real floor, on
which extractor, and which generated samples to look at beside their nearest training images.

    summary = summarise(results, separation, floor_record)
    summary["headline"]       # one sentence: near or far from the floor, on which extractor, by what
    summary["lines"]          # what `medgan evaluate` prints first (headline, notes, one line per extractor)
    summary["extractor"]      # the extractor the verdict is read on (the most discriminative one)

The verdict reads the Fréchet distance, precision and recall as multiples of their floors on the most
discriminative extractor (the one that puts the generated set furthest beyond the gap between two real
halves): a weak extractor cannot tell a poor generated set from real data, so its ratio near 1 proves
little. The bounds follow the small-data benchmark's bar (issue 14): FD within 2.5x its floor, precision
and recall at least half their floors'.
"""

from __future__ import annotations

import numpy as np

from medgan.metrics.memorization import MemorizationResult

__all__ = [
    "MIN_FIDELITY_RATIO",
    "NEAR_FLOOR_RATIO",
    "SMALL_SET",
    "extractor_line",
    "nearest_training",
    "panel_samples",
    "summarise",
]

NEAR_FLOOR_RATIO = 2.5  # FD within this multiple of its real-vs-real floor reads as "near its floor"
MIN_FIDELITY_RATIO = 0.5  # precision and recall at least this fraction of their floors' for "near"
SMALL_SET = 500  # compared images below which FD's 1/N bias dominates (Chong and Forsyth 2020): read KID too


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _ratio(entry: dict) -> str:
    return f"{entry['ratio']:.2f}x" if entry.get("ratio") is not None else "ratio undefined (floor <= 0)"


def extractor_line(tag: str, results: dict, separation: dict) -> str:
    """One extractor's numbers beside their floors, e.g. 'efficientnet_lite0: FD 12.3 vs floor 1.5 (8.2x); ...'."""
    parts = []
    fd, kid = results.get(f"fd_{tag}_floor"), results.get(f"kid_{tag}_floor")
    if fd:
        parts.append(f"FD {_number(fd['generated'])} vs floor {_number(fd['floor'])} ({_ratio(fd)})")
    elif f"fd_{tag}" in results:
        parts.append(f"FD {_number(results[f'fd_{tag}'])} (no floor)")
    if kid:
        parts.append(
            f"KID {_number(kid['generated'])} ± {_number(kid['generated_std'])} vs floor "
            f"{_number(kid['floor'])} ± {_number(kid['floor_std'])}"
        )
    for name in ("precision", "recall"):
        entry = results.get(f"{name}_{tag}_floor")
        if entry:
            parts.append(f"{name} {entry['generated']:.2f} vs floor {entry['floor']:.2f}")
    sep = separation.get(tag)
    if sep and sep["ratio"] is not None:
        parts.append(f"separation {sep['ratio']:.2f}x")
    return f"{tag}: " + "; ".join(parts)


def _checks(results: dict, tag: str) -> list[tuple[str, float, bool, str]]:
    """(metric, ratio to its floor, within its bound, words) for each verdict metric of `tag` that has a ratio."""
    checks = []
    fd = results.get(f"fd_{tag}_floor")
    if fd and fd["ratio"] is not None:
        checks.append(("FD", fd["ratio"], fd["ratio"] <= NEAR_FLOOR_RATIO, f"FD {fd['ratio']:.2f}x the floor"))
    for name in ("precision", "recall"):
        entry = results.get(f"{name}_{tag}_floor")
        if entry and entry["ratio"] is not None:
            words = f"{name} {entry['generated']:.2f} against the floor's {entry['floor']:.2f} ({entry['ratio']:.2f}x)"
            checks.append((name, entry["ratio"], entry["ratio"] >= MIN_FIDELITY_RATIO, words))
    return checks


def _where(leading: str, order: list[str], separation: dict) -> str:
    separations = {t: separation[t]["ratio"] for t in order if (separation.get(t) or {}).get("ratio") is not None}
    listed = ", ".join(f"{t} {r:.2f}x" for t, r in separations.items())
    if len(separations) < 2 or leading not in separations:
        return f"Read on {leading}" + (f" (separation {listed})." if listed else ".")
    if separations[leading] > NEAR_FLOOR_RATIO:
        return f"Read on {leading}, the more discriminative extractor here (separation {listed})."
    return (
        f"Read on {leading}; no extractor puts the generated set more than {NEAR_FLOOR_RATIO:g}x further from the "
        f"real set than two real halves are from each other (separation {listed}): either it is as close to real "
        "data as real data is, or these extractors are blind to what differs; the pictures decide."
    )


def summarise(results: dict, separation: dict, floor: dict | None, tags: list[str]) -> dict:
    """The verdict and the lines that lead the printed output and the report (see the module docstring).

    near: on the leading extractor, FD within NEAR_FLOOR_RATIO times its floor and precision and recall at least
    MIN_FIDELITY_RATIO times theirs (those that have a floor); far: any of them outside. FD alone can sit near
    its floor while precision says the samples lie off the real manifold, so one failing check decides.
    Returns extractor, verdict (near, far or None), fd_ratio, failed (the metrics outside their bounds),
    headline (one sentence), notes (what backs it) and lines (headline, notes, one line per extractor).
    """
    leading = separation.get("most_discriminative") or (tags[0] if tags else None)
    order = [leading] + [t for t in tags if t != leading] if leading else []
    summary: dict = {"extractor": leading, "verdict": None, "fd_ratio": None, "failed": []}
    checks = _checks(results, leading) if leading else []
    notes = []
    if any(name == "FD" for name, *_ in checks):
        failed = [c for c in checks if not c[2]]
        summary.update(
            verdict="far" if failed else "near",
            fd_ratio=next(r for name, r, *_ in checks if name == "FD"),
            failed=[name for name, *_ in failed],
        )
        if failed:
            outside = ", ".join(f"{name} {ratio:.2f}x" for name, ratio, *_ in failed)
            headline = f"The generated set is far from its real-vs-real floor on {leading}: {outside} the floor."
        else:
            headline = (
                f"The generated set is near its real-vs-real floor on {leading}: FD {summary['fd_ratio']:.2f}x the "
                "floor."
            )
        notes.append(
            "; ".join(words for *_, words in failed + [c for c in checks if c[2]])
            + f" (near: FD at most {NEAR_FLOOR_RATIO:g}x the floor, precision and recall at least "
            f"{MIN_FIDELITY_RATIO:g}x the floor's)."
        )
        notes.append(_where(leading, order, separation))
    elif leading:
        headline = f"No FD floor was computed (fd not asked for, or too few images); read {leading}."
    else:
        headline = "No feature metric was computed, so there is no verdict against a floor."
    if floor:
        subsampled = ", the generated set subsampled" if floor["generated_subsampled"] else ""
        notes.append(
            f"Floor: {floor['description']}, {floor['real_samples']} against {floor['compared_samples']} images "
            f"(the generated comparison uses the same sizes{subsampled})."
        )
        kid = results.get(f"kid_{leading}_floor") if leading else None
        if kid and floor["compared_samples"] < SMALL_SET:
            notes.append(
                f"Small sets ({floor['compared_samples']} images): FD is biased upward at this size; KID is not, "
                f"read it too: {_number(kid['generated'])} against the floor's {_number(kid['floor'])}."
            )
    copies = results.get(f"memorization_{leading}") if leading else None
    if copies:
        notes.append(
            f"Memorization: {copies['flagged']} of {copies['samples']} generated samples flagged as near-copies of "
            "training images (the panels show the nearest training image of each sample shown)."
        )
    summary.update(headline=headline, notes=notes)
    summary["lines"] = [headline, *notes, *(extractor_line(tag, results, separation) for tag in order)]
    return summary


def panel_samples(result: MemorizationResult, count: int = 6) -> list[int]:
    """The generated samples the report shows beside their nearest training images: the flagged near-copies,
    most suspicious first (up to half the panels), then samples evenly spread over the set."""
    flagged = [int(i) for i in result.suspicion_order() if result.flagged[i]][: max(1, count // 2)]
    total = len(result.flagged)
    spread = [int(i) for i in np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))]
    picks = flagged + [i for i in spread if i not in flagged]
    return picks[:count]


def nearest_training(run, tag: str, count: int = 6) -> list[dict]:
    """The nearest-neighbour panels: for a few generated samples (`panel_samples`), the nearest training image
    in pixel space (highest NCC) and in the feature space of `tag`, as the memorization check found them.
    Indices are rows of each set (its images in sorted order); names are paths inside the set's folder."""
    result = run.memorization[tag]
    panels = []
    for i in panel_samples(result, count):
        pixel, feature = int(result.pixel_match[i]), int(result.feature_match[i])
        panels.append(
            {
                "fake": run.fake.images.name(i),
                "fake_index": i,
                "pixel_match": run.train.images.name(pixel),
                "pixel_index": pixel,
                "ncc": float(result.pixel_correlation[i]),
                "feature_match": run.train.images.name(feature),
                "feature_index": feature,
                "feature_ratio": float(result.feature_ratio[i]),
                "flagged": bool(result.flagged[i]),
            }
        )
    return panels
