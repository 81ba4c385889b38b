"""Decode DICOM pixel data, once per file.

Uncompressed single-frame grayscale files (the bulk of CT and MR series) are read straight
from the PixelData offset the header scan recorded: one seek and one read, no second parse.
Everything else (compressed transfer syntaxes, colour, multi-frame) goes through pydicom's
decoders; when a decoder is missing the error names the extra to install.
"""

from __future__ import annotations

import struct

import numpy as np
import pydicom
from pydicom.uid import UID

from medgan.errors import InputError, describe
from medgan.io.dicom_frames import DicomFile

__all__ = ["CODECS_HINT", "read_pixels"]

CODECS_HINT = "pip install 'medgan[codecs]'"

_NATIVE = {
    "1.2.840.10008.1.2": ("<", False),  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": ("<", True),  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": (">", True),  # Explicit VR Big Endian (retired)
}
_LONG_LENGTH_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}


def read_pixels(info: DicomFile) -> np.ndarray:
    """Stored pixel values (before rescale) shaped `(frames, rows, cols[, samples])`."""
    if info.number_of_frames == 1 and info.samples_per_pixel == 1 and info.pixel_offset is not None:
        fast = _read_native(info)
        if fast is not None:
            return fast[np.newaxis]
    return _read_with_pydicom(info)


def _read_native(info: DicomFile) -> np.ndarray | None:
    layout = _NATIVE.get(info.transfer_syntax)
    if layout is None or info.bits_allocated not in (8, 16, 32) or info.pixel_offset is None:
        return None
    endian, explicit = layout
    if endian == ">" and info.bits_allocated == 8:  # 8-bit OW in big endian is word-swapped: pydicom knows how
        return None
    n_bytes = info.rows * info.columns * info.bits_allocated // 8
    try:
        with open(info.path, "rb") as fp:
            fp.seek(info.pixel_offset)
            head = fp.read(12 if explicit else 8)
            length = _element_length(head, endian, explicit)
            if length is None or length == 0xFFFFFFFF:  # encapsulated or odd: leave it to pydicom
                return None
            if explicit and head[4:6] not in _LONG_LENGTH_VRS:
                return None
            if not explicit:
                fp.seek(info.pixel_offset + 8)
            data = fp.read(n_bytes)
    except OSError as err:
        raise InputError(f"cannot read pixel data ({err.strerror or err})", path=info.path) from None
    if length < n_bytes or len(data) < n_bytes:
        raise InputError(
            f"pixel data is truncated: {info.rows}x{info.columns} at {info.bits_allocated} bits needs "
            f"{n_bytes} bytes, the file holds {min(length, len(data))}",
            path=info.path,
        )
    kind = "i" if info.pixel_representation == 1 else "u"
    pixels = np.frombuffer(data, dtype=f"{endian}{kind}{info.bits_allocated // 8}")
    pixels = pixels.reshape(info.rows, info.columns).astype(pixels.dtype.newbyteorder("="), copy=True)
    return _fix_stored_bits(pixels, info)


def _element_length(head: bytes, endian: str, explicit: bool) -> int | None:
    if len(head) < (12 if explicit else 8):
        return None
    if explicit:
        if head[4:6] in _LONG_LENGTH_VRS:
            return struct.unpack(f"{endian}I", head[8:12])[0]
        return struct.unpack(f"{endian}H", head[6:8])[0]
    return struct.unpack(f"{endian}I", head[4:8])[0]


def _fix_stored_bits(pixels: np.ndarray, info: DicomFile) -> np.ndarray:
    """Honour BitsStored: mask unused high bits, sign-extend signed values (as pydicom does)."""
    unused = info.bits_allocated - info.bits_stored
    if unused <= 0:
        return pixels
    if info.pixel_representation == 1:
        np.left_shift(pixels, unused, out=pixels)
        np.right_shift(pixels, unused, out=pixels)
    else:
        np.bitwise_and(pixels, (1 << info.bits_stored) - 1, out=pixels)
    return pixels


def _read_with_pydicom(info: DicomFile) -> np.ndarray:
    try:
        ds = pydicom.dcmread(info.path)
    except Exception as err:
        raise InputError(f"cannot read file ({describe(err)})", path=info.path) from None
    syntax = UID(info.transfer_syntax)
    if syntax.is_compressed and not _decoder_available(syntax):
        raise InputError(f"pixel data is compressed as {syntax.name}; to decode it, {CODECS_HINT}", path=info.path)
    try:
        pixels = ds.pixel_array
    except Exception as err:
        message = describe(err)
        if "truncat" in message.lower() or "expected" in message.lower() or "length" in message.lower():
            raise InputError(f"pixel data is truncated or corrupt ({message})", path=info.path) from None
        raise InputError(f"cannot decode pixel data ({syntax.name}: {message})", path=info.path) from None
    if info.number_of_frames == 1:
        pixels = pixels[np.newaxis]
    return np.ascontiguousarray(pixels)


def _decoder_available(syntax: UID) -> bool:
    try:
        from pydicom.pixels import get_decoder

        return get_decoder(syntax).is_available
    except (ImportError, NotImplementedError, ValueError):
        return False
