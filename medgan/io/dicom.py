"""DICOM series -> MetaTensor: find the series, lay each out, decode once, rescale to physical units.

`scan_dicom(path)` reads headers only and returns the series found (split where they cannot
form one regular volume); `DicomSeries.load()` decodes pixels and builds the volume:

* the layout (`medgan.io.dicom_layout`): slices sorted along the slice normal, the spacing checked
  (a gap is an error, or an interpolation with `allow_gaps=True`, whose slice indices go into the
  metadata), the affine built from the measured step, frames sharing a position as channels;
* each file's pixels decoded once (`medgan.io.dicom_pixels`), threads overlapping I/O;
* RescaleSlope/Intercept (plain or per-frame) are applied, so CT comes out in HU. Integer
  results stay integer (int16 when they fit), anything else is float32.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from medgan.errors import InputError
from medgan.io.dicom_frames import Frame, frames_from_header, group_frames
from medgan.io.dicom_layout import VolumeLayout, volume_layout
from medgan.io.dicom_pixels import read_pixels
from medgan.io.dicom_scan import Problem, list_dicom_files, read_header

__all__ = ["DicomScan", "DicomSeries", "scan_dicom", "skips_reported_by_caller"]

log = logging.getLogger(__name__)

_SERIES_ATTRIBUTES = (
    "Modality", "SeriesDescription", "SeriesNumber", "StudyInstanceUID", "StudyDescription",
    "FrameOfReferenceUID", "Manufacturer", "ManufacturerModelName", "BodyPartExamined",
    "PatientPosition", "SOPClassUID", "ImageType", "WindowCenter", "WindowWidth", "RescaleType",
    "MagneticFieldStrength", "KVP", "ConvolutionKernel", "ContrastBolusAgent",
)  # fmt: skip
_PATIENT_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyDate")
# Set by skips_reported_by_caller(); a context variable, so a scan in another thread keeps logging.
_CALLER_REPORTS_SKIPS: ContextVar[bool] = ContextVar("medgan_dicom_caller_reports_skips", default=False)


@dataclass
class DicomSeries:
    """Frames that form one volume, plus the header attributes worth keeping."""

    key: str  # SeriesInstanceUID, or "UID:n" when one series had to be split
    uid: str
    frames: list[Frame]
    attributes: dict  # series-level attributes of the first file (no patient identity)
    patient: dict  # patient identity, kept apart; written out only when asked

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(f.file.path for f in self.frames))

    @property
    def modality(self) -> str:
        return str(self.attributes.get("Modality", "") or "")

    @property
    def folder(self) -> str:
        return os.path.commonpath([os.path.dirname(p) or "." for p in self.files])

    def geometry(self, allow_gaps: bool = False) -> VolumeLayout:
        """Sort the frames and work out the grid, from headers alone."""
        return volume_layout(self.frames, self.key, self.folder, allow_gaps)

    def load(self, allow_gaps: bool = False, workers: int | None = None):
        """Decode and assemble the volume: a MetaTensor `[C, i, j, k]` (or `[C, i, j]`) in RAS."""
        from medgan.io.image import make_image  # torch and MONAI load here, not for a header scan

        layout = self.geometry(allow_gaps)
        planes = _decode(self.frames, workers)
        array, slopes, intercepts = _assemble(layout, planes)
        meta = {
            "format": "dicom",
            "filename_or_obj": self.files[0] if len(self.files) == 1 else self.folder,
            "files": self.files,
            "series_uid": self.uid,
            "series_key": self.key,
            "sop_instance_uids": list(dict.fromkeys(f.file.sop_instance_uid for f in self.frames)),
            "modality": self.modality,
            "rescale_slope": slopes,
            "rescale_intercept": intercepts,
            "units": "HU" if self.modality == "CT" and not layout.geometry_unknown else "",
            "dicom": dict(self.attributes),
            "patient": dict(self.patient),
            "warnings": list(layout.warnings),
        }
        if layout.interpolated:
            meta["interpolated_slices"] = list(layout.interpolated)
        meta["source_slices"] = [_references(layout, a, b) for a, b, _ in layout.sources]
        return make_image(array, layout.affine, meta)


@dataclass
class DicomScan:
    series: list[DicomSeries]
    problems: list[Problem] = field(default_factory=list)  # unreadable or invalid files
    skipped: list[Problem] = field(default_factory=list)  # valid DICOM that holds no image


@contextlib.contextmanager
def skips_reported_by_caller() -> Iterator[None]:
    """Within this block `scan_dicom` lists the files it skips in `DicomScan.problems` without also logging
    them, for a caller that reports every skipped file itself (`medgan evaluate` names them in its warnings,
    metrics.json and report), so that each is reported once. Elsewhere each skip is logged as it happens."""
    token = _CALLER_REPORTS_SKIPS.set(True)
    try:
        yield
    finally:
        _CALLER_REPORTS_SKIPS.reset(token)


def scan_dicom(path: str | os.PathLike, skip_invalid: bool = False, files: Sequence[str] | None = None) -> DicomScan:
    """Read the headers under `path` (a file, folder or DICOMDIR) and group them into series.

    With `skip_invalid=False` the first unreadable or non-DICOM file raises `InputError`;
    otherwise it is listed in `problems` and the scan goes on.
    """
    frames: list[Frame] = []
    patient: dict[str, dict] = {}
    attributes: dict[str, dict] = {}
    problems: list[Problem] = []
    skipped: list[Problem] = []
    for file in list_dicom_files(path) if files is None else files:
        try:
            ds, offset = read_header(file)
            if "Rows" not in ds and "PixelData" not in ds:
                skipped.append(Problem(file, f"not an image ({_sop_name(ds)})"))
                continue
            file_frames = frames_from_header(file, ds, offset)
        except InputError as err:
            if not skip_invalid:
                raise
            problems.append(Problem(file, err.reason))
            if not _CALLER_REPORTS_SKIPS.get():
                log.warning("skipped %s", problems[-1])
            continue
        uid = file_frames[0].group[0]
        if uid not in attributes:
            attributes[uid] = _pick(ds, _SERIES_ATTRIBUTES)
            patient[uid] = _pick(ds, _PATIENT_ATTRIBUTES)
        frames.extend(file_frames)
    series = []
    groups = group_frames(frames)
    per_uid = Counter(key[0] for key in groups)
    seen: Counter = Counter()
    for key, members in sorted(groups.items(), key=lambda kv: (kv[0][0], _first_instance(kv[1]))):
        uid = key[0]
        seen[uid] += 1
        name = uid if per_uid[uid] == 1 else f"{uid}:{seen[uid]}"
        series.append(DicomSeries(name, uid, members, attributes[uid], patient[uid]))
    return DicomScan(series, problems, skipped)


def _decode(frames: list[Frame], workers: int | None) -> dict[tuple[str, int], np.ndarray]:
    """Read each file's pixels exactly once; threads overlap file I/O and decompression."""
    files = list({f.file.path: f.file for f in frames}.values())
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    if workers > 1 and len(files) >= 32:
        with ThreadPoolExecutor(workers) as pool:
            decoded = list(pool.map(read_pixels, files))
    else:
        decoded = [read_pixels(f) for f in files]
    pixels = {}
    for info, array in zip(files, decoded, strict=True):
        for index in range(array.shape[0]):
            pixels[info.path, index] = array[index]
    return pixels


def _assemble(layout: VolumeLayout, planes: dict) -> tuple[np.ndarray, object, object]:
    """Stack planes into `[C, i, j, k]` in physical units (rescale applied per frame)."""
    frames = [f for cluster in layout.clusters for f in cluster]
    slopes = {f.slope for f in frames}
    intercepts = {f.intercept for f in frames}
    sample = planes[frames[0].file.path, frames[0].index]
    integer = (
        np.issubdtype(sample.dtype, np.integer)
        and slopes == {1.0}
        and all(float(i).is_integer() for i in intercepts)
        and not layout.interpolated
    )
    work_dtype = (np.int32 if sample.dtype.itemsize <= 2 else np.int64) if integer else np.float32
    n_channels = len(layout.clusters[0]) * (sample.shape[-1] if sample.ndim == 3 else 1)
    rows, cols = sample.shape[:2]
    out = np.empty((n_channels, cols, rows, len(layout.sources)), dtype=work_dtype)

    def channels(cluster: list[Frame]) -> np.ndarray:
        stack = []
        for f in cluster:
            plane = planes[f.file.path, f.index].astype(work_dtype)
            if f.slope != 1.0:
                plane = plane * f.slope
            if f.intercept != 0.0:
                plane = plane + (int(f.intercept) if integer else f.intercept)
            stack.append(np.moveaxis(plane, -1, 0) if plane.ndim == 3 else plane[np.newaxis])
        return np.concatenate(stack).transpose(0, 2, 1)  # (C, rows, cols) -> (C, i=col, j=row)

    for k, (a, b, w) in enumerate(layout.sources):
        if a == b:
            out[..., k] = channels(layout.clusters[a])
        else:
            out[..., k] = (1 - w) * channels(layout.clusters[a]) + w * channels(layout.clusters[b])
    if integer:
        low, high = (int(out.min()), int(out.max())) if out.size else (0, 0)
        for dtype in (np.uint8, np.int16, np.int32):  # uint8 only for 8-bit sources (colour, SC)
            if dtype == np.uint8 and sample.dtype != np.uint8:
                continue
            if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
                out = out.astype(dtype)
                break
    if len(layout.shape) == 2:
        out = out[..., 0]
    slope = slopes.pop() if len(slopes) == 1 else sorted(slopes)
    intercept = intercepts.pop() if len(intercepts) == 1 else sorted(intercepts)
    return out, slope, intercept


def _references(layout: VolumeLayout, a: int, b: int) -> list[tuple[str, str, int | None]]:
    """(SOP class, SOP instance, frame number or None) of the frames an output slice came from."""
    frames = layout.clusters[a] + (layout.clusters[b] if b != a else [])
    return [
        (f.file.sop_class_uid, f.file.sop_instance_uid, f.index + 1 if f.file.number_of_frames > 1 else None)
        for f in frames
    ]


def _first_instance(frames: list[Frame]) -> tuple:
    return min((f.instance_number or 0, f.file.path) for f in frames)


def _pick(ds: Dataset, keywords: Sequence[str]) -> dict:
    picked = {}
    for keyword in keywords:
        value = ds.get(keyword)
        if value in (None, ""):
            continue
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            picked[keyword] = [str(v) for v in value]
        elif isinstance(value, int | float):
            picked[keyword] = value
        else:
            picked[keyword] = str(value)
    return picked


def _sop_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    return getattr(uid, "name", None) or str(uid or "unknown SOP class")
