"""A small PNG writer for greyscale previews (8- or 16-bit), with the standard library's zlib.

No imaging library is needed: PNG is a signature and chunks (length, type, data, CRC-32),
the pixels being filtered rows compressed with deflate (PNG specification, ISO/IEC 15948).
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from medgan.io.atomic import atomic_file

__all__ = ["encode_png", "to_uint8", "write_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a 2D greyscale array, rows top to bottom: uint8 (8-bit) or uint16 (16-bit)."""
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16) or min(pixels.shape) < 1:
        raise ValueError(f"expected a non-empty 2D uint8 or uint16 array, got {pixels.dtype} {pixels.shape}")
    height, width = pixels.shape
    bit_depth = 8 if pixels.dtype == np.uint8 else 16
    rows = np.ascontiguousarray(pixels.astype(">u2") if bit_depth == 16 else pixels).reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows.view(np.uint8)], axis=1)  # filter type 0
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)  # greyscale, no interlace
    return (
        _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _chunk(b"IEND", b"")
    )


def to_uint8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly to 0..255 (clipped): a display window."""
    scaled = (np.asarray(image, dtype=np.float64) - low) / max(high - low, 1e-12)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def write_png(pixels: np.ndarray, path: str | os.PathLike, overwrite: bool = False) -> str:
    """Write a greyscale PNG atomically; returns the path."""
    data = encode_png(pixels)
    with atomic_file(path, overwrite=overwrite, suffix=".png") as temp, open(temp, "wb") as fh:
        fh.write(data)
    return os.fspath(path)
