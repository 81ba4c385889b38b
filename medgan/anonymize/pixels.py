"""Burned-in text: flag it, quarantine it, or blank the recipe's pixel regions.

medgan does not read pixels for text. A file is flagged when it says BurnedInAnnotation=YES,
or when its modality is one where burned-in text is common (US, SC, OT, XC, ES by default) and
the attribute is absent. Such a file is quarantined unless a recipe region matches it; then
those boxes are set to zero in every frame. Only then are pixels decoded (compressed data is
decoded and stored uncompressed, explicit VR little endian); otherwise they are copied as bytes.
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
    """Set the boxes (x0, y0, x1, y1; end exclusive, clipped to the image) to 0 in every frame."""
    if "PixelData" not in ds:
        raise PixelError("only PixelData can be blanked (float pixel data is not supported)")
    if int(ds.get("BitsAllocated", 0) or 0) not in (8, 16, 32):
        raise PixelError(f"cannot blank pixels with BitsAllocated {ds.get('BitsAllocated')}")
    try:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        pixels = ds.pixel_array.copy()
    except Exception as err:
        raise PixelError(f"cannot decode the pixels to blank them ({err.__class__.__name__})") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    view = pixels if frames > 1 else pixels[np.newaxis]
    if samples == 1:
        view = view[..., np.newaxis]
    rows, columns = view.shape[1], view.shape[2]
    for x0, y0, x1, y1 in boxes:
        view[:, min(y0, rows) : min(y1, rows), min(x0, columns) : min(x1, columns), :] = 0
    ds.set_pixel_data(pixels, str(ds.PhotometricInterpretation), int(ds.BitsStored))
