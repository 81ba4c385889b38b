"""TensorBoard event files (scalars and PNG images) written without TensorFlow or TensorBoard.

An event file is a sequence of TFRecords (length, masked CRC-32C, data, masked CRC-32C), each
holding one `Event` protocol buffer. Only the handful of fields TensorBoard reads for scalars
and images are encoded here, by hand, so training needs neither `tensorboard` nor an imaging
library; `tensorboard --logdir RUN_DIR` shows the result.
"""

from __future__ import annotations

import os
import socket
import struct
import time

__all__ = ["EventWriter", "crc32c", "read_events"]


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli polynomial, reflected
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values are encoded as ten-byte two's complement
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint((number << 3) | wire_type) + payload


def _bytes_field(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def _event(step: int, summary: bytes | None = None, file_version: str | None = None) -> bytes:
    out = _field(1, 1, struct.pack("<d", time.time())) + _field(2, 0, _varint(step))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if summary is not None:
        out += _bytes_field(5, summary)
    return out


class EventWriter:
    """Appends scalars and images to `run_dir/events.out.tfevents.<time>.<host>`."""

    def __init__(self, run_dir: str):
        os.makedirs(run_dir, exist_ok=True)
        self.path = os.path.join(run_dir, f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}")
        self._file = open(self.path, "ab")  # noqa: SIM115 (kept open for the run; closed by close())
        self._write(_event(0, file_version="brain.Event:2"))

    def _write(self, record: bytes) -> None:
        length = struct.pack("<Q", len(record))
        self._file.write(length + struct.pack("<I", _masked_crc(length)) + record)
        self._file.write(struct.pack("<I", _masked_crc(record)))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        summary = b"".join(
            _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", float(value))))
            for tag, value in values.items()
        )
        self._write(_event(step, summary))

    def image(self, step: int, tag: str, png: bytes, height: int, width: int) -> None:
        image = _field(1, 0, _varint(height)) + _field(2, 0, _varint(width)) + _field(3, 0, _varint(1))
        image += _bytes_field(4, png)
        self._write(_event(step, _bytes_field(1, _bytes_field(1, tag.encode()) + _bytes_field(4, image))))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_events(path: str) -> list[dict]:
    """Decode an event file written here: [{step, scalars: {tag: value}, images: {tag: png}}].

    Checks every record's CRCs, so it doubles as a validator in tests.
    """
    events = []
    with open(path, "rb") as fh:
        data = fh.read()
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[offset + 8 : offset + 12])[0] != _masked_crc(header):
            raise ValueError(f"bad length CRC at byte {offset}")
        record = data[offset + 12 : offset + 12 + length]
        if struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])[0] != _masked_crc(record):
            raise ValueError(f"bad data CRC at byte {offset}")
        offset += 16 + length
        events.append(_decode_event(record))
    return events


def _fields(data: bytes):
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        yield number, value


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _decode_event(record: bytes) -> dict:
    event: dict = {"step": 0, "scalars": {}, "images": {}}
    for number, value in _fields(record):
        if number == 2:
            event["step"] = value
        elif number == 5:
            for _, value_msg in _fields(value):
                parts = dict(_fields(value_msg))
                tag = parts[1].decode()
                if 2 in parts:
                    event["scalars"][tag] = struct.unpack("<f", parts[2])[0]
                if 4 in parts:
                    event["images"][tag] = dict(_fields(parts[4]))[4]
    return event
