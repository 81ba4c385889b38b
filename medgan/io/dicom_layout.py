"""Lay out one DICOM series as a volume, from its headers: sort, check the spacing, build the affine.

`volume_layout` sorts the frames of a candidate volume by their position along the slice normal
(never by InstanceNumber or file name); frames sharing a position (dynamic or multi-phase
acquisitions) become channels. The affine's third column is the measured step between
positions, so gantry tilt shows up as a sheared affine rather than being lost. A missing slice or
irregular spacing is an error, or with `allow_gaps=True` a warning and a linear interpolation
onto a regular grid: `VolumeLayout.sources` says which slices each output slice is made from.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from medgan.errors import InputError
from medgan.io.dicom_frames import Frame
from medgan.io.geometry import affine_from_dicom, slice_normal

__all__ = ["VolumeLayout", "volume_layout"]

log = logging.getLogger(__name__)

_POSITION_TOLERANCE_MM = 0.01  # positions are often printed with two decimals
_SPACING_TOLERANCE = 0.02  # a slice step may differ from the nominal one by 2%


@dataclass
class VolumeLayout:
    """Where every output slice comes from: `sources[k]` is (a, b, w): (1-w)*cluster a + w*cluster b."""

    affine: np.ndarray
    shape: tuple[int, ...]  # spatial shape, (i, j, k) or (i, j)
    clusters: list[list[Frame]]  # frames at one position, channel order
    sources: list[tuple[int, int, float]]
    warnings: list[str]
    interpolated: list[int]
    geometry_unknown: bool


def volume_layout(frames: list[Frame], key: str, folder: str, allow_gaps: bool = False) -> VolumeLayout:
    """Sort the frames of the series `key` (found in `folder`, for messages) along the slice normal, check
    the spacing, and work out the grid: from headers alone."""
    first = frames[0]
    rows, cols = first.file.rows, first.file.columns
    spacing = first.pixel_spacing or (1.0, 1.0)
    warnings: list[str] = []
    if first.pixel_spacing is None:
        warnings.append("no PixelSpacing: assuming 1 mm pixels")
    if first.position is None or first.row_cosine is None:
        return _layout_without_geometry(frames, spacing, warnings)

    normal = slice_normal(first.row_cosine, first.col_cosine)
    clusters = _clusters_along(frames, normal, key, folder)
    distances = np.array([c[0].position @ normal for c in clusters])
    positions = np.array([c[0].position for c in clusters])
    n = len(clusters)
    if n == 1:
        step = normal * (first.spacing_between_slices or first.slice_thickness or 1.0)
        affine = affine_from_dicom(first.row_cosine, first.col_cosine, spacing, first.position, step)
        return VolumeLayout(affine, (cols, rows, 1), clusters, [(0, 0, 0.0)], warnings, [], False)

    steps = np.diff(distances)
    nominal = float(np.median(steps))
    tolerance = max(_POSITION_TOLERANCE_MM, _SPACING_TOLERANCE * nominal)
    irregular = np.flatnonzero(np.abs(steps - nominal) > tolerance)
    if irregular.size == 0:
        step = (positions[-1] - positions[0]) / (n - 1)
        off_line = np.linalg.norm(positions - (positions[0] + np.outer(np.arange(n), step)), axis=1).max()
        if off_line > tolerance:
            raise InputError(
                f"series {key}: slice positions do not lie on a straight line "
                f"(off by up to {off_line:.3f} mm); cannot build one volume",
                path=folder,
            )
        affine = affine_from_dicom(first.row_cosine, first.col_cosine, spacing, positions[0], step)
        sources = [(k, k, 0.0) for k in range(n)]
        return VolumeLayout(affine, (cols, rows, n), clusters, sources, warnings, [], False)

    worst = int(irregular[np.argmax(np.abs(steps[irregular] - nominal))])
    what = (
        f"series {key}: slices are not evenly spaced: {steps[worst]:.3f} mm between the slices at "
        f"{distances[worst]:.2f} and {distances[worst + 1]:.2f} mm along the normal, where {nominal:.3f} mm "
        f"is usual ({irregular.size} irregular step{'s' if irregular.size > 1 else ''})"
    )
    if not allow_gaps:
        raise InputError(
            what + "; a slice may be missing (--allow-gaps of medgan convert and info, or allow_gaps=True in Python, "
            "interpolates across it)",
            path=folder,
        )
    log.warning("%s; interpolating onto a regular %.3f mm grid", what, nominal)
    warnings.append(what + "; interpolated onto a regular grid")
    n_out = round((distances[-1] - distances[0]) / nominal) + 1
    targets = np.linspace(distances[0], distances[-1], n_out)
    sources, interpolated = [], []
    for k, t in enumerate(targets):
        b = int(np.clip(np.searchsorted(distances, t), 1, n - 1))
        a = b - 1
        w = float((t - distances[a]) / (distances[b] - distances[a]))
        if t - distances[a] <= tolerance:  # on a real slice (within tolerance mm), however wide the gap
            sources.append((a, a, 0.0))
        elif distances[b] - t <= tolerance:
            sources.append((b, b, 0.0))
        else:
            sources.append((a, b, w))
            interpolated.append(k)
    step = (positions[-1] - positions[0]) / (n_out - 1)
    affine = affine_from_dicom(first.row_cosine, first.col_cosine, spacing, positions[0], step)
    return VolumeLayout(affine, (cols, rows, n_out), clusters, sources, warnings, interpolated, False)


def _layout_without_geometry(frames: list[Frame], spacing, warnings) -> VolumeLayout:
    frames = sorted(frames, key=lambda f: (f.file.path, f.index))
    first = frames[0]
    rows, cols = first.file.rows, first.file.columns
    warnings.append("no patient position/orientation: the affine is nominal (LPS axes, unit slice step)")
    step = np.array([0.0, 0.0, first.spacing_between_slices or first.slice_thickness or 1.0])
    affine = affine_from_dicom(np.eye(3)[0], np.eye(3)[1], spacing, np.zeros(3), step)
    clusters = [[f] for f in frames]
    sources = [(k, k, 0.0) for k in range(len(frames))]
    shape = (cols, rows) if len(frames) == 1 else (cols, rows, len(frames))
    return VolumeLayout(affine, shape, clusters, sources, warnings, [], True)


def _clusters_along(frames: list[Frame], normal: np.ndarray, key: str, folder: str) -> list[list[Frame]]:
    """Group frames by position along the normal; frames sharing a position become channels."""
    order = sorted(frames, key=lambda f: float(f.position @ normal))
    clusters: list[list[Frame]] = [[order[0]]]
    for frame in order[1:]:
        if abs(float((frame.position - clusters[-1][0].position) @ normal)) <= _POSITION_TOLERANCE_MM:
            clusters[-1].append(frame)
        else:
            clusters.append([frame])
    sizes = Counter(len(c) for c in clusters)
    if len(sizes) > 1:
        raise InputError(
            f"series {key}: positions hold different numbers of slices "
            f"({', '.join(f'{n} position(s) with {k}' for k, n in sorted(sizes.items()))}); "
            "duplicate or missing slices",
            path=folder,
        )
    for cluster in clusters:
        cluster.sort(key=lambda f: (f.temporal_index, f.instance_number or 0, f.file.path, f.index))
    return clusters
