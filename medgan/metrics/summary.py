"""The summary a set evaluation leads with: how far the generated set is from its real-vs-real floor, on
which extractor, and which generated samples to look at beside their nearest training images.

    summary = summarise(results, separation, floor_record)
    summary["lines"]          # what `medgan evaluate` prints first and the report's first screen says
    summary["extractor"]      # the extractor the verdict is read on (the most discriminative one)

The verdict reads the Fréchet distance as a multiple of its floor on the most discriminative
extractor (the one that puts the generated set furthest beyond the gap between two real halves): a
weak extractor cannot tell a poor generated set from real data, so its ratio near 1 proves little.
"""

from __future__ import annotations

import numpy as np

from medgan.metrics.memorization import MemorizationResult

__all__ = ["NEAR_FLOOR_RATIO", "extractor_line", "nearest_training", "panel_samples", "summarise"]

NEAR_FLOOR_RATIO = 2.5  # FD within this multiple of its real-vs-real floor reads as "near its floor"


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


def summarise(results: dict, separation: dict, floor: dict | None, tags: list[str]) -> dict:
    """The verdict and the lines that lead the printed output and the report (see the module docstring)."""
    leading = separation.get("most_discriminative") or (tags[0] if tags else None)
    order = [leading] + [t for t in tags if t != leading] if leading else []
    summary: dict = {"extractor": leading, "verdict": None, "fd_ratio": None, "lines": []}
    entry = results.get(f"fd_{leading}_floor") if leading else None
    if entry and entry["ratio"] is not None:
        ratio = entry["ratio"]
        near = ratio <= NEAR_FLOOR_RATIO
        summary.update(verdict="near" if near else "far", fd_ratio=ratio)
        separations = {t: separation[t]["ratio"] for t in order if (separation.get(t) or {}).get("ratio") is not None}
        listed = ", ".join(f"{t} {r:.2f}x" for t, r in separations.items())
        if len(separations) < 2:
            where = f"on {leading}"
        elif separations[leading] > NEAR_FLOOR_RATIO:
            where = f"on {leading}, the more discriminative extractor here (separation {listed})"
        else:
            where = (
                f"on {leading}; no extractor puts it more than {NEAR_FLOOR_RATIO:g}x further from the real set than "
                f"two real halves are from each other (separation {listed})"
            )
        state = "near its real-vs-real floor" if near else "far from its real-vs-real floor"
        summary["lines"].append(
            f"The generated set is {state} {where}: FD {ratio:.2f}x the floor (near: at most {NEAR_FLOOR_RATIO:g}x)."
        )
    elif leading:
        summary["lines"].append(f"No FD floor was computed (fd not asked for, or too few images); read {leading}.")
    if floor:
        subsampled = ", the generated set subsampled" if floor["generated_subsampled"] else ""
        summary["lines"].append(
            f"Floor: {floor['description']}, {floor['real_samples']} against {floor['compared_samples']} images "
            f"(the generated comparison uses the same sizes{subsampled})."
        )
    summary["lines"] += [extractor_line(tag, results, separation) for tag in order]
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
