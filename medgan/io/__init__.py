"""Medical image I/O that keeps geometry exact.

    from medgan.io import read_image, write_image
    ct = read_image("scans/chest/")              # DICOM folder -> MetaTensor [1, i, j, k], HU, RAS affine
    write_image(ct, "chest.nii.gz")               # NIfTI with sform and qform
    write_image(ct, "chest_dcm/", to="dicom")     # a DICOM series, marked derived

Formats are chosen by suffix (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd); anything else is
treated as DICOM (a file, a folder of files, or a DICOMDIR).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from medgan.errors import InputError, OutputError
from medgan.io.dicom import DicomScan, DicomSeries, scan_dicom
from medgan.io.dicom_scan import Problem

__all__ = [
    "WRITE_SUFFIXES",
    "FoundImage",
    "MultipleSeriesError",
    "Problem",
    "find_images",
    "format_of",
    "read_image",
    "write_image",
]

_SUFFIXES = {".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mha"}
WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
_DOCUMENT_SUFFIXES = (".json", ".md", ".txt", ".rst", ".py", ".yaml", ".yml", ".csv", ".tsv", ".html", ".pdf",
                      ".log", ".bval", ".bvec", ".xml")  # fmt: skip


class MultipleSeriesError(InputError):
    """A folder holds several series and none was chosen; `.series` lists them."""

    def __init__(self, path: str, series: list[DicomSeries]):
        self.series = series
        super().__init__(
            f"holds {len(series)} series; choose one with --series (run `medgan info` to list them)", path=path
        )


@dataclass
class FoundImage:
    """An image found under a path: a file in a volume format or one DICOM series."""

    format: str
    source: str  # the file, or the folder a DICOM series came from
    load: Callable[..., object]  # load(allow_gaps=False) -> MetaTensor
    series: DicomSeries | None = None


def format_of(path: str | os.PathLike) -> str:
    """'nifti', 'nrrd' or 'mha' by suffix; 'dicom' for anything else."""
    name = os.fspath(path).lower()
    for suffix, kind in _SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    return "dicom"


def read_image(
    path: str | os.PathLike,
    series: str | None = None,
    allow_gaps: bool = False,
    skip_invalid: bool = False,
):
    """Read one image as a MetaTensor `[C, *spatial]` with a RAS affine.

    series: for a DICOM folder holding several series, the SeriesInstanceUID (or the
        `UID:n` key `medgan info` shows for a split series) to read.
    allow_gaps: interpolate across missing slices instead of failing (recorded in the metadata).
    skip_invalid: in a DICOM folder, skip unreadable or non-DICOM files instead of failing.
    """
    path = os.fspath(path)
    kind = format_of(path)
    if kind == "nifti":
        from medgan.io.nifti import read_nifti

        return read_nifti(path)
    if kind in ("nrrd", "mha"):
        from medgan.io.sitk import read_sitk

        return read_sitk(path, kind)
    scan = scan_dicom(path, skip_invalid=skip_invalid)
    return select_series(scan, path, series).load(allow_gaps=allow_gaps)


def select_series(scan: DicomScan, path: str, series: str | None) -> DicomSeries:
    if not scan.series:
        detail = f"; {len(scan.problems)} file(s) unreadable, e.g. {scan.problems[0]}" if scan.problems else ""
        raise InputError(f"no DICOM images found{detail}", path=path)
    if series is None:
        if len(scan.series) > 1:
            raise MultipleSeriesError(path, scan.series)
        return scan.series[0]
    matches = [s for s in scan.series if series in (s.key, s.uid)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        keys = ", ".join(s.key for s in matches)
        raise InputError(f"series {series} was split into {len(matches)} volumes; choose one of {keys}", path=path)
    raise InputError(f"no series {series} here (found: {', '.join(s.key for s in scan.series)})", path=path)


def find_images(path: str | os.PathLike, skip_invalid: bool = False) -> tuple[list[FoundImage], list[Problem]]:
    """Every image under `path`: volume files by suffix, DICOM files grouped into series.

    Unlike `read_image` on a DICOM folder, which insists that every file be DICOM, this
    explorer passes over documents and sidecars (README.md, *.json, *.txt, ...).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError("no such file or folder", path=path)
    if os.path.isfile(path) and format_of(path) != "dicom":
        return [FoundImage(format_of(path), path, _file_loader(path))], []
    from medgan.io.dicom_scan import list_dicom_files

    candidates = [p for p in list_dicom_files(path) if not p.lower().endswith(_DOCUMENT_SUFFIXES)]
    volume_files = [p for p in candidates if format_of(p) != "dicom" and not p.lower().endswith(".raw")]
    raw_partners = _detached_data_files(volume_files)
    dicom_files = [p for p in candidates if format_of(p) == "dicom" and p not in raw_partners]
    found = [FoundImage(format_of(p), p, _file_loader(p)) for p in volume_files]
    problems: list[Problem] = []
    if dicom_files:
        scan = scan_dicom(path, skip_invalid=skip_invalid, files=dicom_files)
        problems = scan.problems
        single = dicom_files == [path]  # one DICOM file asked for by name: show the file, not its folder
        found += [FoundImage("dicom", path if single else s.folder, s.load, s) for s in scan.series]
    return found, problems


def write_image(
    image,
    path: str | os.PathLike,
    to: str | None = None,
    overwrite: bool = False,
    **dicom_options,
) -> str:
    """Write `image` to `path`; the format follows the suffix, or `to="dicom"` for a series folder.

    dicom_options go to `medgan.io.dicom_write.write_dicom_series` (modality, synthetic,
    multiframe, copy_patient, series_description, ...).
    """
    path = os.fspath(path)
    try:
        return _write_image(image, path, to, overwrite, dicom_options)
    except OSError as err:  # a full disk, a read-only or vanished folder: one line, not a traceback
        raise OutputError(f"cannot write it ({_os_reason(err)})", path=path) from None


def _os_reason(err: BaseException) -> str:
    """The operating system's own words: pydicom re-raises an OSError with a traceback in its message, so the
    original error is looked for along the chain of causes."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(err).splitlines()[0]


def _write_image(image, path: str, to: str | None, overwrite: bool, dicom_options: dict) -> str:
    if to == "dicom":
        from medgan.io.dicom_write import write_dicom_series

        return write_dicom_series(image, path, overwrite=overwrite, **dicom_options)
    if to not in (None, "nifti", "nrrd", "mha"):
        raise OutputError(f"unknown output format {to!r} (choose nifti, nrrd, mha or dicom)", path=path)
    if not path.lower().endswith(WRITE_SUFFIXES):
        raise OutputError(
            f"cannot tell the output format from the name; use one of {', '.join(WRITE_SUFFIXES)}, "
            "or --to dicom for a DICOM series folder",
            path=path,
        )
    kind = format_of(path)
    if to is not None and to != kind:
        raise OutputError(f"the name says {kind} but --to says {to}; make them agree", path=path)
    if dicom_options:
        raise OutputError(f"options {sorted(dicom_options)} apply to DICOM output only", path=path)
    if kind == "nifti":
        from medgan.io.nifti import write_nifti

        return write_nifti(image, path, overwrite=overwrite)
    from medgan.io.sitk import write_sitk

    return write_sitk(image, path, overwrite=overwrite)


def _file_loader(path: str) -> Callable[..., object]:
    def load(allow_gaps: bool = False):
        return read_image(path)

    return load


def _detached_data_files(headers: list[str]) -> set[str]:
    """Data files named by .mhd/.mha/.nhdr headers are part of those images, not DICOM candidates:
    the file the header names (ElementDataFile, data file), and the usual stem + .raw/.img siblings."""
    partners = set()
    for header in headers:
        lower = header.lower()
        if not lower.endswith((".mhd", ".mha", ".nhdr")):
            continue
        if not lower.endswith(".mha"):
            stem = os.path.splitext(header)[0]
            partners.update(stem + ext for ext in (".raw", ".zraw", ".raw.gz", ".img"))
        named = _named_data_file(header)
        if named:
            partners.add(os.path.join(os.path.dirname(header), named))
    return partners


_DATA_FILE_FIELD = re.compile(r"^[ \t]*(?:ElementDataFile[ \t]*=|data ?file[ \t]*:)(.*)$", re.I | re.M)


def _named_data_file(header: str) -> str | None:
    """The one data file a MetaImage or NRRD header names (None for LOCAL data or a list)."""
    try:
        with open(header, "rb") as fp:
            text = fp.read(8192).decode("latin-1")
    except OSError:
        return None
    match = _DATA_FILE_FIELD.search(text)
    if match is None:
        return None
    value = match.group(1).strip()
    if value.upper() == "LOCAL" or value.upper().startswith("LIST") or "%" in value or " " in value:
        return None  # data in the header file itself, or a list or pattern of files
    return value
