"""The outcome of one input, as a worker returns it and the batch records it.

DICOM inputs (`medgan.anonymize.worker`) and NIfTI inputs (`medgan.anonymize.nifti`) both end in
a `Result`; the batch renames its temporary files into place and writes its row of report.csv.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Result"]


@dataclass
class Result:
    """The outcome of one input, as the batch records it."""

    status: str  # ok, quarantined or failed
    reason: str = ""  # short, and never quotes a value from the file
    temp_paths: tuple[str, ...] = ()  # written files, to be renamed into place
    outputs: tuple[str, ...] = ()  # their paths relative to OUT, same order
    kind: str = "dicom"  # dicom or nifti: the report's kind column
