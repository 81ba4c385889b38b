"""Find the candidate DICOM files under a path and read their headers (never their pixels).

`list_dicom_files` takes a file, a folder (recursively, links followed, hidden files and known
non-image names passed over) or a DICOMDIR (the files it references). `read_header` parses one
file up to its pixel data and says where that starts, so uncompressed pixels can later be read
straight from the file; what is not DICOM, or is cut short, becomes one `InputError` line. Turning
headers into frames and volumes is `medgan.io.dicom_frames`' work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medgan.errors import InputError, describe
from medgan.io.walk import walk_tree

__all__ = ["READABLE", "Problem", "list_dicom_files", "read_header"]

_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_IGNORED_NAMES = {"DICOMDIR", "Thumbs.db", "desktop.ini"}
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")  # others are often absent, or a UID's last component
# Named when a file in another format is met; medgan.io reads the volume formats by these suffixes.
READABLE = "DICOM, NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd)"


@dataclass
class Problem:
    """A file that was skipped or failed, with the reason (for batch reports)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def list_dicom_files(path: str | os.PathLike) -> list[str]:
    """Every candidate file under `path`: a file, a folder (recursive), or a DICOMDIR's references."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError("no such file or folder", path=path)
    if os.path.isdir(path):
        return [
            os.path.join(root, n)
            for root, names in walk_tree(path, lambda folder, name: name.startswith("."))  # linked folders too
            for n in names
            if not n.startswith(".") and n not in _IGNORED_NAMES
        ]
    if _is_dicomdir(path):
        return _dicomdir_references(path)
    return [path]


def read_header(path: str) -> tuple[Dataset, int | None]:
    """Parse a file's header up to the pixel data. Returns the dataset and PixelData's file offset.

    A file that is not DICOM is named by its suffix when that suffix says it is another format (a
    PNG, a spreadsheet), with the formats medgan reads; else it is "not a DICOM file".
    """
    preamble = False
    try:
        with open(path, "rb") as fp:
            preamble = _has_preamble(fp)
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not preamble)
            offset = fp.tell()
            tail = fp.read(4)
            if tail not in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
                offset = None
            # file offsets mean nothing in a deflated body
            if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
                fp.seek(0)
                ds, offset = pydicom.dcmread(fp, force=True), None
    except PermissionError:
        raise InputError("permission denied", path=path) from None
    except IsADirectoryError:
        raise InputError("is a folder, not a file", path=path) from None
    except OSError as err:
        raise InputError(f"cannot read ({err.strerror or err})", path=path) from None
    except InvalidDicomError:
        raise _not_dicom(path, "") from None
    except Exception as err:  # pydicom raises many types on broken headers
        if not preamble and _foreign_suffix(path):
            raise _not_dicom(path, "") from None
        raise InputError(f"truncated or corrupt DICOM header ({describe(err)})", path=path) from None
    if offset is None and not tail and "PixelData" not in ds and _ends_early(ds, preamble):
        raise InputError("truncated DICOM file: it ends inside its header", path=path)
    if "SOPClassUID" not in ds and "Rows" not in ds:
        raise _not_dicom(path, " (no SOP Class UID and no image attributes)")
    return ds, offset


def _not_dicom(path: str, detail: str) -> InputError:
    suffix = _foreign_suffix(path)
    if suffix:
        return InputError(f"unsupported format {suffix}: not a DICOM file, and medgan reads only {READABLE}", path=path)
    return InputError(f"not a DICOM file{detail}", path=path)


def _foreign_suffix(path: str) -> str:
    """The file's suffix when it names a format other than DICOM; "" for none, DICOM's own, or a UID's last digits."""
    suffix = os.path.splitext(os.path.basename(path))[1].lower()
    if not suffix or suffix[1:].isdigit() or suffix in _DICOM_SUFFIXES:
        return ""
    return suffix


def _ends_early(ds: Dataset, preamble: bool) -> bool:
    """pydicom parses a cut-off header without complaint: look for the signs of one that ran out of file."""
    if not preamble and "SOPClassUID" not in ds:
        return False  # bytes force-parsed without a DICM preamble that never looked like DICOM
    tags = list(ds.keys())
    last = ds.get_item(tags[-1]) if tags else None
    if isinstance(last, RawDataElement) and last.length != 0xFFFFFFFF and len(last.value or b"") < last.length:
        return True  # the last value is shorter than its declared length
    sop_class = getattr(ds.get("SOPClassUID"), "name", "")
    return sop_class.endswith("Image Storage") or (preamble and not tags)  # cut inside the file meta


def _has_preamble(fp) -> bool:
    start = fp.tell()
    head = fp.read(132)
    fp.seek(start)
    return len(head) == 132 and head[128:132] == b"DICM"


def _is_dicomdir(path: str) -> bool:
    if os.path.basename(path).upper() == "DICOMDIR":
        return True
    try:
        meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
    except Exception:
        return False
    return str(meta.get("MediaStorageSOPClassUID", "")) == _MEDIA_STORAGE_DIRECTORY


def _dicomdir_references(path: str) -> list[str]:
    from pydicom.fileset import FileSet

    try:
        fileset = FileSet(pydicom.dcmread(path))
    except Exception as err:
        raise InputError(f"unreadable DICOMDIR ({describe(err)})", path=path) from None
    files = []
    for instance in fileset:
        ref = instance.path
        if not os.path.isfile(ref):
            raise InputError(f"DICOMDIR references a missing file {ref!r}", path=path)
        files.append(ref)
    return files
