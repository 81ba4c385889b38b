"""Burned-in text: flag it, quarantine it, or blank the recipe's pixel regions.

medgan does not read pixels for text. A file is flagged when it says BurnedInAnnotation=YES,
or when its modality is one where burned-in text is common (US, SC, OT, XC, ES by default) and
the attribute is absent. Such a file is quarantined unless a recipe region matches it; then
those boxes are set to black in every frame: native pixel data is edited in place (any byte order,
8 to 64 bits allocated), compressed data is decoded and stored uncompressed (explicit VR little
endian). The SOP Instance UID stays the keyed one. Otherwise pixels are copied as bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pydicom.dataset import Dataset

from medgan.anonymize.recipe import PixelRegion

__all__ = ["PixelError", "blank_regions", "burned_in_reason", "has_pixels", "matching_boxes"]

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, DoubleFloatPixelData


class PixelError(Exception):
    """The pixels cannot be blanked (unsupported layout, no decoder, inconsistent header)."""


def has_pixels(ds: Dataset) -> bool:
    return any(tag in ds for tag in _PIXEL_TAGS)


def burned_in_reason(ds: Dataset, modalities: Iterable[str]) -> str:
    """Why the pixels may carry identifying text, or "" when there is no such reason."""
    if not has_pixels(ds):
        return ""
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES: pixels may show identifying text"
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if not flag and modality in set(modalities):
        return f"modality {modality} often has burned-in text and BurnedInAnnotation is absent"
    return ""


def _contains(haystack: str, needle: str | None) -> bool:
    return needle is None or needle.casefold() in haystack.casefold()


def matching_boxes(
    ds: Dataset, regions: tuple[PixelRegion, ...] | list[PixelRegion]
) -> list[tuple[int, int, int, int]]:
    """Boxes of every recipe region whose criteria all match this file."""
    if not regions or not has_pixels(ds):
        return []
    modality = str(ds.get("Modality", "") or "").strip().upper()
    manufacturer = str(ds.get("Manufacturer", "") or "")
    model = str(ds.get("ManufacturerModelName", "") or "")
    rows, columns = ds.get("Rows"), ds.get("Columns")
    boxes = []
    for region in regions:
        if region.modality is not None and region.modality.upper() != modality:
            continue
        if not (_contains(manufacturer, region.manufacturer) and _contains(model, region.model)):
            continue
        if (region.rows is not None and region.rows != rows) or (
            region.columns is not None and region.columns != columns
        ):
            continue
        boxes.extend(region.boxes)
    return boxes


def blank_regions(ds: Dataset, boxes: list[tuple[int, int, int, int]]) -> None:
    """Set the boxes (x0, y0, x1, y1; end exclusive, clipped to the image) to black in every frame.

    Native pixel data is edited where it lies, in its own byte order, bit depth and planar
    configuration; nothing else in the dataset changes (the SOP Instance UID above all: it is
    the keyed one). Encapsulated pixel data is decoded first and stored uncompressed (explicit
    VR little endian). Black is 0 in every sample, except YBR colour (Y 0, Cb and Cr mid-range).
    """
    if "PixelData" not in ds:
        raise PixelError("only PixelData can be blanked (float pixel data is not supported)")
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if bits not in (8, 16, 32, 64):
        raise PixelError(f"cannot blank pixels with BitsAllocated {ds.get('BitsAllocated')}")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and syntax.is_compressed:
        try:
            ds.decompress(generate_instance_uid=False)
        except Exception as err:
            raise PixelError(
                f"cannot decode the {syntax.name} pixels to blank them ({err.__class__.__name__})"
            ) from None
        syntax = ds.file_meta.TransferSyntaxUID
    little = syntax.is_little_endian if syntax is not None and syntax.is_transfer_syntax else _little(ds)
    _blank_native(ds, boxes, bits, little)


def _little(ds: Dataset) -> bool:
    little = ds.original_encoding[1]
    return True if little is None else bool(little)


def _blank_native(ds: Dataset, boxes: list[tuple[int, int, int, int]], bits: int, little: bool) -> None:
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        planar = int(ds.get("PlanarConfiguration", 0) or 0)
    except (AttributeError, TypeError, ValueError):
        raise PixelError("cannot blank pixels: Rows, Columns, frames or samples are missing or not numbers") from None
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    subsampled = photometric in ("YBR_FULL_422", "YBR_PARTIAL_422")
    if min(frames, rows, columns, samples) < 1 or (subsampled and (samples != 3 or columns % 2)):
        raise PixelError("cannot blank pixels: inconsistent image geometry")
    per_frame = rows * columns * (2 if subsampled else samples)
    dtype = np.dtype(f"{'<' if little else '>'}u{bits // 8}")
    data = bytearray(ds.PixelData)
    # Big endian OW holds 8-bit samples in swapped pairs: put them in order while editing.
    swapped = not little and bits == 8 and ds["PixelData"].VR == "OW" and len(data) % 2 == 0
    if swapped:
        data[0::2], data[1::2] = data[1::2], data[0::2]
    size = frames * per_frame * dtype.itemsize
    if len(data) < size:
        raise PixelError("cannot blank pixels: the pixel data is shorter than its header says")
    values = np.frombuffer(data, dtype=dtype, count=frames * per_frame)
    mid = 1 << (int(ds.get("BitsStored", bits) or bits) - 1)
    fill = [0, mid, mid] if photometric.startswith("YBR") and samples == 3 else [0] * samples
    for x0, y0, x1, y1 in boxes:
        ys = slice(min(y0, rows), min(y1, rows))
        if subsampled:  # Y Y Cb Cr for each pair of pixels: blank whole pairs
            pairs = values.reshape(frames, rows, columns // 2, 4)
            xs = slice(min(x0, columns) // 2, (min(x1, columns) + 1) // 2)
            pairs[:, ys, xs, :2] = 0
            pairs[:, ys, xs, 2:] = mid
            continue
        xs = slice(min(x0, columns), min(x1, columns))
        if planar == 1 and samples > 1:
            planes = values.reshape(frames, samples, rows, columns)
            for sample in range(samples):
                planes[:, sample, ys, xs] = fill[sample]
        else:
            pixels = values.reshape(frames, rows, columns, samples)
            pixels[:, ys, xs, :] = fill
    if swapped:
        data[0::2], data[1::2] = data[1::2], data[0::2]
    ds.PixelData = bytes(data)
