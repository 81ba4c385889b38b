"""One input file -> one de-identified temporary file (runs in a worker process).

Reads the file once with pydicom, applies the passes, writes once to a temporary file inside
the output's work folder; the batch then renames it into place. Pixel data is carried as the
bytes that were read, in the input's transfer syntax. Every failure becomes a `Result` with a
short reason that names no patient (exception types, never exception text, which may quote
values from the file).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import sys
import uuid
import warnings

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medgan.anonymize.nifti import process_nifti
from medgan.anonymize.passes import CorruptValue, Deidentifier, NestingTooDeep, PatientNotMapped
from medgan.anonymize.pixels import PixelError, has_pixels
from medgan.anonymize.quiet import quiet_pydicom
from medgan.anonymize.recipe import Policy
from medgan.anonymize.result import Result

__all__ = ["init_pool_worker", "init_worker", "process_chunk", "process_file"]

_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_deidentifier: Deidentifier | None = None


def init_worker(policy: Policy) -> None:
    """Build the passes once per process (in a pool worker, or in this process)."""
    global _deidentifier
    _deidentifier = Deidentifier(policy)


def init_pool_worker(policy: Policy, parent_pid: int) -> None:
    """Process-pool initializer: die with the batch process, then build the passes.

    Pool workers wait on a pipe that they hold open themselves, so if the batch is killed outright
    (SIGKILL, the out-of-memory killer) they would otherwise wait forever. On Linux the kernel
    sends them SIGTERM when it dies; the batch's journal lets the next run resume.
    """
    # A forked worker inherits the batch's Python handlers (the CLI turns SIGTERM into an exception
    # that unwinds); a worker must simply end: its temporary file is cleared by the next run.
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)
    if sys.platform.startswith("linux"):  # (with a fork server as parent, it dies with the batch, and so do we)
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:  # the batch died before the line above took effect
            os._exit(1)
        except PermissionError:
            pass
    init_worker(policy)


def process_file(path: str, sidecar: str | None, input_id: str, temp_dir: str) -> Result:
    """De-identify one input into `temp_dir`; never raises for a bad input."""
    assert _deidentifier is not None, "init_worker() first"
    with quiet_pydicom():
        return _process(path, sidecar, input_id, temp_dir)


def process_chunk(tasks: list[tuple[str, str | None, str]], temp_dir: str) -> list[Result]:
    """Several inputs in one call (one round trip to a worker process for all of them)."""
    return [process_file(path, sidecar, key, temp_dir) for path, sidecar, key in tasks]


def _process(path: str, sidecar: str | None, input_id: str, temp_dir: str) -> Result:
    assert _deidentifier is not None
    if path.endswith((".hdr", ".img")):
        return Result("failed", "Analyze or NIfTI header/image pairs are not supported", kind="nifti")
    if path.endswith(_NIFTI_SUFFIXES):
        return process_nifti(path, sidecar, input_id, temp_dir, _deidentifier.policy)
    try:
        ds = _read(path)
    except _Failed as err:
        return Result("failed", str(err))
    except _Directory:
        return Result("quarantined", "a DICOMDIR index, not an image: not copied (the output has its own layout)")
    except Exception as err:  # a value pydicom cannot even convert (e.g. a damaged VR): the file fails
        return Result("failed", f"truncated or corrupt DICOM ({err.__class__.__name__})")
    try:
        return _deidentify_and_write(ds, input_id, temp_dir)
    except _Failed as err:
        return Result("failed", str(err))
    except (PatientNotMapped, CorruptValue) as err:
        return Result("failed", str(err))
    except (NestingTooDeep, RecursionError):
        return Result("failed", "sequences nested too deeply")
    except PixelError as err:
        return Result("failed", str(err))
    except Exception as err:  # a malformed value deep in the file: this file fails, the batch goes on
        return Result("failed", f"cannot de-identify ({err.__class__.__name__})")


class _Failed(Exception):
    pass


class _Directory(Exception):
    pass


def _read(path: str) -> Dataset:
    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
            fp.seek(0)
            has_preamble = len(head) == 132 and head[128:132] == b"DICM"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ds = pydicom.dcmread(fp, force=not has_preamble)
    except (PermissionError, IsADirectoryError) as err:
        raise _Failed(f"cannot read ({err.__class__.__name__})") from None
    except OSError as err:
        raise _Failed(f"cannot read ({err.__class__.__name__})") from None
    except InvalidDicomError:
        raise _Failed("not a DICOM file") from None
    except Exception as err:
        raise _Failed(f"truncated or corrupt DICOM ({err.__class__.__name__})") from None
    if any("End of file reached" in str(w.message) or "truncated" in str(w.message) for w in caught):
        raise _Failed("truncated DICOM file")
    if not has_preamble and "SOPClassUID" not in ds and "Rows" not in ds:
        raise _Failed("not a DICOM file")
    meta = getattr(ds, "file_meta", None)
    _check_meta(meta)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == _MEDIA_STORAGE_DIRECTORY:
        raise _Directory()
    if len(ds) == 0:
        raise _Failed("no data set after the file meta (corrupt file)")
    _check_lengths(ds)
    _check_pixel_length(ds)
    if _ends_short(ds, path):
        raise _Failed("truncated DICOM file")
    if "Rows" in ds and not has_pixels(ds):
        # Image attributes without pixels: a file cut between two elements reads without error.
        raise _Failed("an image without pixel data (truncated file?)")
    if has_pixels(ds) and ("Rows" not in ds or "Columns" not in ds):
        raise _Failed("pixel data without Rows and Columns")
    return ds


def _ends_short(ds: Dataset, path: str) -> bool:
    """A file cut inside an element reads without error: pydicom drops a partial element header, and keeps a
    value shorter than its length says. Both show in the last element: it must end exactly at the end of the
    file. (A cut between two elements cannot be told from a complete file; the image checks below catch most.)"""
    if not len(ds) or str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
        return False  # positions in a deflated file are those of the inflated stream
    raw = ds.get_item(max(ds.keys()))
    tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return False  # a parsed sequence, or an undefined length: its own items were checked as they were read
    return tell + length != os.path.getsize(path)


_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def _check_meta(meta: Dataset | None) -> None:
    """A damaged length in the file meta can swallow the whole data set into one UID value, which
    would then be written out verbatim: every UID there must look like a UID."""
    if meta is None:
        return
    for keyword in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID"):
        value = meta.get(keyword)
        text = "" if value is None else str(value).rstrip("\x00 ")
        if text and (len(text) > 64 or not _UID.match(text)):
            raise _Failed(f"corrupt file meta ({keyword} is not a UID)")


def _check_lengths(ds: Dataset) -> None:
    """A value shorter than its declared length means the file was cut: pydicom reads it silently."""
    for tag in ds.keys():  # noqa: SIM118  iterating a Dataset yields (and decodes) elements
        raw = ds.get_item(tag)
        defined = isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF and raw.value is not None
        if defined and len(raw.value) < raw.length:
            raise _Failed("truncated DICOM file")


def _check_pixel_length(ds: Dataset) -> None:
    """Native pixel data shorter than its header says is a truncated file, not an image."""
    if "PixelData" not in ds:
        return
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and syntax.is_compressed:
        return
    try:
        expected = int(get_expected_length(ds, "bytes"))
    except Exception:
        return  # no usable geometry: nothing to compare against; the bytes are carried as they are
    value = ds.get_item(0x7FE00010).value
    if isinstance(value, bytes | bytearray) and len(value) < expected:
        raise _Failed("truncated pixel data")


def _deidentify_and_write(ds: Dataset, input_id: str, temp_dir: str) -> Result:
    assert _deidentifier is not None
    outcome = _deidentifier(ds)
    if outcome.status != "ok":
        return Result(outcome.status, outcome.reason)
    name = _safe(outcome.sop_uid) or f"instance-{input_id}"
    relative = os.path.join(
        _safe(outcome.patient) or "no-patient",
        _safe(outcome.study_uid) or "no-study",
        _safe(outcome.series_uid) or "no-series",
        name + ".dcm",
    )
    temp = os.path.join(temp_dir, f"{uuid.uuid4().hex}.dcm")
    try:
        _write(ds, temp)
    except Exception as err:
        _remove(temp)
        raise _Failed(f"cannot write the de-identified file ({err.__class__.__name__})") from None
    return Result("ok", "pixels blanked" if outcome.pixels_blanked else "", (temp,), (relative,))


def _safe(text: str) -> str:
    """Keep only characters that are safe in a path component (UIDs and pseudonyms already are)."""
    return "".join(c for c in text if c.isalnum() or c in ".-_")[:64]


def _write(ds: Dataset, path: str) -> None:
    """Write as Part 10 (preamble + meta) in the transfer syntax the file was read in, in one write."""
    _complete_meta(ds)
    meta = ds.file_meta
    # A file without a SOP Class cannot have a valid Part 10 header; it is written as it came.
    enforce = bool(meta.get("MediaStorageSOPClassUID")) and bool(meta.get("MediaStorageSOPInstanceUID"))
    try:
        data = _encode(ds, enforce)
    except Exception:
        # Elements read with an encoding other than the transfer syntax (e.g. implicit VR in a
        # file that claims explicit): decode them all so pydicom can re-encode, then retry.
        for _ in ds.iterall():
            pass
        data = _encode(ds, enforce)
    with open(path, "wb") as fh:
        fh.write(data)


def _encode(ds: Dataset, enforce: bool) -> bytes:
    syntax = ds.file_meta.TransferSyntaxUID
    if not enforce or syntax.is_deflated or not syntax.is_transfer_syntax:
        buffer = DicomBytesIO()
        ds.save_as(buffer, enforce_file_format=enforce)
        return buffer.getvalue()
    # pydicom's save_as, less its copies and checks of the file meta: ~30% faster on small files.
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    buffer.write((ds.preamble or b"\0" * 128)[:128].ljust(128, b"\0") + b"DICM")
    write_file_meta_info(buffer, ds.file_meta, enforce_standard=True)
    buffer.is_little_endian, buffer.is_implicit_VR = syntax.is_little_endian, syntax.is_implicit_VR
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _complete_meta(ds: Dataset) -> None:
    ds.ensure_file_meta()
    meta = ds.file_meta
    if "TransferSyntaxUID" not in meta:
        implicit, little = ds.original_encoding
        meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian
            if implicit
            else (pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)
        )
    if "MediaStorageSOPClassUID" not in meta and "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
