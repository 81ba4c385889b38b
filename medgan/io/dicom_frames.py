"""DICOM headers -> frames with their geometry, grouped into candidate volumes (no pixels read).

A *frame* is one 2D image plane: a single-frame file, or one frame of a multi-frame file.
`frames_from_header` takes the plain attributes or the functional groups (shared and per frame)
of an enhanced file; a legacy multi-frame file, which gives one position, has its frames placed
along the slice normal. Frames are grouped by SeriesInstanceUID and split further when
orientation, matrix size, pixel spacing, echo or (for multi-frame files) the instance differ,
because each resulting group must form one regular volume (`group_frames`). Pixel data cut short
is caught here, from its length, so a batch can pass over the file before decoding anything.
"""

from __future__ import annotations

import os
import struct
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medgan.errors import InputError

__all__ = ["DicomFile", "Frame", "frames_from_header", "group_frames"]

_ORIENTATION_TOLERANCE = 1e-4  # cosines within 1e-4 of each other belong to the same stack
_SPACING_TOLERANCE = 1e-4  # mm


@dataclass
class DicomFile:
    """Header facts of one DICOM file that the pixel reader needs (shared by its frames)."""

    path: str
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    number_of_frames: int
    pixel_offset: int | None  # file offset of the PixelData element (its tag), if found


@dataclass
class Frame:
    """One image plane and its geometry in LPS millimetres."""

    file: DicomFile
    index: int  # frame index inside a multi-frame file; 0 for single-frame files
    position: np.ndarray | None  # ImagePositionPatient
    row_cosine: np.ndarray | None  # ImageOrientationPatient[:3]
    col_cosine: np.ndarray | None  # ImageOrientationPatient[3:]
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns)
    slice_thickness: float | None
    spacing_between_slices: float | None
    slope: float
    intercept: float
    instance_number: int | None
    temporal_index: tuple[float, ...]  # sort key among frames sharing a position
    group: tuple = field(default=())  # what must agree for frames to share a volume


def frames_from_header(path: str, ds: Dataset, pixel_offset: int | None) -> list[Frame]:
    """The frames of one file, with geometry from the plain or the functional-group attributes."""
    if "Rows" not in ds or "Columns" not in ds:
        raise InputError("holds no image (no Rows/Columns)", path=path)
    if "PixelData" not in ds and pixel_offset is None and "FloatPixelData" not in ds:
        raise InputError("holds no pixel data", path=path)
    n_frames = int(_number(ds, "NumberOfFrames", 1) or 1)
    info = DicomFile(
        path=path,
        transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
        if hasattr(ds, "file_meta")
        else "1.2.840.10008.1.2",
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),
        bits_allocated=int(ds.get("BitsAllocated", 16)),
        bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 16))),
        pixel_representation=int(ds.get("PixelRepresentation", 0)),
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")),
        number_of_frames=n_frames,
        pixel_offset=pixel_offset,
    )
    _check_pixel_length(info)
    series_uid = str(ds.get("SeriesInstanceUID", "")) or f"no-series-uid:{path}"
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    frames = []
    for index in range(n_frames):
        groups = [g for g in (per_frame[index] if per_frame and index < len(per_frame) else None, shared) if g]
        frame = _frame_geometry(ds, groups, n_frames)
        frame.file = info
        frame.index = index
        key_orientation = (
            None if frame.row_cosine is None else tuple(float(v) for v in np.r_[frame.row_cosine, frame.col_cosine])
        )
        key_spacing = None if frame.pixel_spacing is None else tuple(float(v) for v in frame.pixel_spacing)
        frame.group = (
            series_uid,
            key_orientation,
            info.rows,
            info.columns,
            info.samples_per_pixel,
            key_spacing,
            str(ds.get("EchoNumbers", "")),
            # Frames of one multi-frame file form their own volume; so does a geometry-less file.
            info.sop_instance_uid if (n_frames > 1 or frame.position is None) else "",
            _stack_id(groups),
        )
        frames.append(frame)
    if n_frames > 1 and per_frame is None:
        _place_legacy_frames(frames, ds.get("GridFrameOffsetVector"))
    return frames


def _check_pixel_length(info: DicomFile) -> None:
    """Catch pixel data cut short at scan time (so --skip-invalid can pass over it): uncompressed grayscale
    by its size, encapsulated (compressed) by walking its fragment items to the sequence delimiter."""
    if info.pixel_offset is None:
        return
    header_bytes = {"1.2.840.10008.1.2": 8, "1.2.840.10008.1.2.1": 12, "1.2.840.10008.1.2.2": 12}.get(
        info.transfer_syntax
    )
    if header_bytes is None and info.transfer_syntax != DeflatedExplicitVRLittleEndian:
        _check_fragments(info)
    if header_bytes is None or info.samples_per_pixel != 1:
        return
    needed = (info.rows * info.columns * info.number_of_frames * info.bits_allocated + 7) // 8
    available = os.path.getsize(info.path) - info.pixel_offset - header_bytes
    if available < needed:
        raise InputError(
            f"pixel data is truncated: {info.number_of_frames} frame(s) of {info.rows}x{info.columns} at "
            f"{info.bits_allocated} bits need {needed} bytes, the file holds {max(available, 0)}",
            path=info.path,
        )


def _check_fragments(info: DicomFile) -> None:
    size = os.path.getsize(info.path)
    with open(info.path, "rb") as fp:
        fp.seek(info.pixel_offset + 8)
        if fp.read(4) != b"\xff\xff\xff\xff":  # not encapsulated after all: leave it to the decoder
            return
        while True:
            head = fp.read(8)
            if len(head) < 8:
                break
            group, element, length = struct.unpack("<HHI", head)
            if (group, element) == (0xFFFE, 0xE0DD):  # sequence delimiter: complete
                return
            if (group, element) != (0xFFFE, 0xE000):  # not the expected item structure: leave it to the decoder
                return
            if fp.tell() + length > size:
                break
            fp.seek(length, os.SEEK_CUR)
    raise InputError("pixel data is truncated: the file ends inside its compressed fragments", path=info.path)


def _place_legacy_frames(frames: list[Frame], grid_offsets=None) -> None:
    """Legacy multi-frame files give one position: later frames step along the normal, by the
    GridFrameOffsetVector where there is one (RT Dose; relative, or absolute z when its first value is not 0)."""
    first = frames[0]
    if first.position is None or first.row_cosine is None:
        for frame in frames:
            frame.position = None
        return
    normal = np.cross(first.row_cosine, first.col_cosine)
    step = first.spacing_between_slices or first.slice_thickness or 1.0
    offsets = [frame.index * step for frame in frames]
    if grid_offsets is not None and len(grid_offsets) == len(frames):
        offsets = [float(v) - float(grid_offsets[0]) for v in grid_offsets]
    for frame, offset in zip(frames, offsets, strict=True):
        frame.position = first.position + offset * normal


def group_frames(frames: Iterable[Frame]) -> dict[tuple, list[Frame]]:
    """Frames by stack. Orientation and pixel spacing are compared within a tolerance, not by rounding:
    values that straddle a rounding boundary (0.0000499 and 0.0000501) stay in one stack."""
    groups: dict[tuple, list[Frame]] = defaultdict(list)
    keys_by_rest: dict[tuple, list[tuple]] = defaultdict(list)
    for frame in frames:
        key = frame.group
        rest = key[:1] + key[2:5] + key[6:]
        for known in keys_by_rest[rest]:
            if _close(known[1], key[1], _ORIENTATION_TOLERANCE) and _close(known[5], key[5], _SPACING_TOLERANCE):
                key = known
                break
        else:
            keys_by_rest[rest].append(key)
        groups[key].append(frame)
    return groups


def _close(a: tuple | None, b: tuple | None, tolerance: float) -> bool:
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def _frame_geometry(ds: Dataset, groups: Sequence[Dataset], n_frames: int) -> Frame:
    def from_groups(sequence: str, keyword: str):
        for g in groups:
            item = _first_item(g, sequence)
            if item is not None and keyword in item and item[keyword].value not in (None, ""):
                return item[keyword].value
        return None

    position = from_groups("PlanePositionSequence", "ImagePositionPatient")
    orientation = from_groups("PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = from_groups("PixelMeasuresSequence", "PixelSpacing")
    thickness = from_groups("PixelMeasuresSequence", "SliceThickness")
    between = from_groups("PixelMeasuresSequence", "SpacingBetweenSlices")
    slope = from_groups("PixelValueTransformationSequence", "RescaleSlope")
    intercept = from_groups("PixelValueTransformationSequence", "RescaleIntercept")
    if position is None and (n_frames == 1 or not groups):
        position = ds.get("ImagePositionPatient")
    orientation = orientation if orientation is not None else ds.get("ImageOrientationPatient")
    spacing = spacing if spacing is not None else (ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing"))
    thickness = thickness if thickness is not None else ds.get("SliceThickness")
    between = between if between is not None else ds.get("SpacingBetweenSlices")
    slope = slope if slope is not None else ds.get("RescaleSlope")
    intercept = intercept if intercept is not None else ds.get("RescaleIntercept")
    row_cosine = col_cosine = None
    if orientation is not None and len(orientation) == 6:
        iop = np.asarray([float(v) for v in orientation])
        row_cosine, col_cosine = _orthonormal(iop[:3], iop[3:])
    content = _first_item(groups[0], "FrameContentSequence") if groups else None
    temporal = []
    if content is not None:
        temporal += [
            float(v) for v in (content.get("TemporalPositionIndex"), content.get("FrameAcquisitionNumber")) if v
        ]
    for keyword in ("TemporalPositionIdentifier", "TriggerTime", "AcquisitionNumber"):
        value = _number(ds, keyword, None)
        if value is not None:
            temporal.append(float(value))
    instance = _number(ds, "InstanceNumber", None)
    return Frame(
        file=None,  # type: ignore[arg-type]  # filled in by the caller
        index=0,
        position=None if position is None or len(position) != 3 else np.asarray([float(v) for v in position]),
        row_cosine=row_cosine,
        col_cosine=col_cosine,
        pixel_spacing=None if spacing is None or len(spacing) != 2 else (float(spacing[0]), float(spacing[1])),
        slice_thickness=_positive(thickness),
        spacing_between_slices=_positive(between),
        slope=1.0 if slope in (None, "") else float(slope),
        intercept=0.0 if intercept in (None, "") else float(intercept),
        instance_number=None if instance is None else int(instance),
        temporal_index=tuple(temporal),
    )


def _orthonormal(row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalise the two direction cosines (scanners round them to a few digits)."""
    row = row / np.linalg.norm(row)
    col = col - row * float(row @ col)
    return row, col / np.linalg.norm(col)


def _stack_id(groups: Sequence[Dataset]) -> str:
    for g in groups:
        item = _first_item(g, "FrameContentSequence")
        if item is not None and "StackID" in item:
            return str(item.StackID)
    return ""


def _first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    if ds is None or keyword not in ds:
        return None
    seq = ds[keyword].value
    return seq[0] if seq else None


def _number(ds: Dataset, keyword: str, default):
    try:
        value = ds.get(keyword)
        return default if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return default


def _positive(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None
