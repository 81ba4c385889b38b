"""NIfTI de-identification: header text fields, header extensions, JSON sidecars, file names.

A NIfTI header has no patient fields, but converters put identifying text in `descrip`,
`aux_file`, `db_name` and `intent_name`, and DICOM headers (even whole ones) in extensions.
Those fields are cleared and every extension dropped; the voxel bytes are copied unchanged
(the header is rewritten, the data after it streamed as is). BIDS sidecars lose every key
that is a DICOM keyword the profile does not keep (dates, names, IDs, device serials, UIDs),
plus date and birth keys that are not DICOM keywords; remaining strings are swept for the
removed names and IDs. Output names are keyed (the input's id), since file names often carry
the patient's name or ID.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import uuid
from typing import Any

from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header
from pydicom.datadict import dictionary_VR, tag_for_keyword

from medgan.anonymize.identity import IdentifierScrubber
from medgan.anonymize.profile import action_table
from medgan.anonymize.recipe import Policy
from medgan.anonymize.result import Result

__all__ = [
    "TEXT_FIELDS",
    "header_class",
    "open_nifti",
    "process_nifti",
    "scrub_header",
    "scrub_sidecar",
    "sidecar_key_kept",
]

TEXT_FIELDS = ("descrip", "aux_file", "db_name", "intent_name")
_EXTRA_KEYS = re.compile(r"(Date|DateTime|BirthDate|DateOfBirth|Birthday|PatientName|SubjectName|Email|Phone)$")
_CHUNK_BYTES = 1 << 20


def scrub_header(header: Nifti1Header) -> Nifti1Header:
    """Clear the free-text fields and drop every extension (in place; returns the header)."""
    for name in TEXT_FIELDS:
        if name in header:
            header[name] = b""
    header.extensions.clear()
    header["vox_offset"] = header.single_vox_offset  # data now starts right after the header
    return header


def sidecar_key_kept(key: str, actions: dict[int, str]) -> bool:
    """Whether a sidecar key survives: a DICOM keyword the profile keeps, or a non-DICOM key that is not a date,
    a name or a contact."""
    tag = tag_for_keyword(key)
    if tag is None:
        return not _EXTRA_KEYS.search(key)
    action = actions.get(tag)
    if action is None:
        return True
    return action == "K"


def scrub_sidecar(data: Any, policy: Policy) -> Any:
    """A copy of a JSON sidecar without identifying keys, and with the removed names/IDs swept from text."""
    actions = action_table(policy.columns)
    removed: list[str] = []

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if sidecar_key_kept(str(key), actions):
                    out[key] = walk(value)
                else:
                    removed.extend(_strings(str(key), value))
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    cleaned = walk(data)
    scrubber = IdentifierScrubber(removed)
    return _sweep(cleaned, scrubber) if not scrubber.empty else cleaned


def _strings(key: str, value: Any) -> list[str]:
    tag = tag_for_keyword(key)
    vr = dictionary_VR(tag) if tag is not None else ""
    if not isinstance(value, str) or vr not in ("PN", "LO", "SH") or len(value.strip()) < 4:
        return []
    parts = [value.strip(), *(p for p in re.split(r"[\^\s]+", value) if len(p) >= 3)] if vr == "PN" else [value]
    return parts


def _sweep(node: Any, scrubber: IdentifierScrubber) -> Any:
    if isinstance(node, dict):
        return {k: _sweep(v, scrubber) for k, v in node.items()}
    if isinstance(node, list):
        return [_sweep(v, scrubber) for v in node]
    return scrubber.scrub(node) if isinstance(node, str) else node


def open_nifti(path: str, mode: str):
    """The file, gunzipped on the fly for .gz."""
    return gzip.open(path, mode, compresslevel=6) if path.endswith(".gz") else open(path, mode)


def header_class(first_bytes: bytes) -> type[Nifti1Header]:
    """NIfTI-1 or NIfTI-2, from the header size in the first four bytes (either byte order)."""
    for klass in (Nifti1Header, Nifti2Header):
        size = klass.template_dtype.itemsize
        if first_bytes in (size.to_bytes(4, "little"), size.to_bytes(4, "big")):
            return klass
    raise ValueError("not a NIfTI-1 or NIfTI-2 single file")


def rewrite_nifti(source: str, target: str) -> None:
    """Write `source` to `target` with a scrubbed header and the voxel bytes copied unchanged."""
    with open_nifti(source, "rb") as src:
        klass = header_class(src.read(4))
        src.seek(0)
        header = klass.from_fileobj(src, check=False)
        if header["magic"] not in (b"n+1", b"n+2"):
            raise ValueError("a NIfTI header/image pair (.hdr/.img) is not supported")
        data_offset = int(header["vox_offset"])
        scrub_header(header)
        src.seek(data_offset)  # gzip streams seek forward by reading
        with open_nifti(target, "wb") as dst:
            header.write_to(dst)
            shutil.copyfileobj(src, dst, _CHUNK_BYTES)


def process_nifti(path: str, sidecar: str | None, input_id: str, temp_dir: str, policy: Policy) -> Result:
    """Worker entry for a NIfTI input (and its JSON sidecar): returns its `Result`."""
    suffix = ".nii.gz" if path.endswith(".nii.gz") else ".nii"
    temp = os.path.join(temp_dir, uuid.uuid4().hex + suffix)
    temps, outputs = [temp], [os.path.join("nifti", input_id + suffix)]
    try:
        rewrite_nifti(path, temp)
        if sidecar is not None:
            with open(sidecar, encoding="utf-8") as fh:
                cleaned = scrub_sidecar(json.load(fh), policy)
            temps.append(os.path.join(temp_dir, uuid.uuid4().hex + ".json"))
            outputs.append(os.path.join("nifti", input_id + ".json"))
            with open(temps[-1], "w", encoding="utf-8") as fh:
                json.dump(cleaned, fh, indent=2)
                fh.write("\n")
    except Exception as err:
        for t in temps:
            if os.path.exists(t):
                os.remove(t)
        what = "sidecar" if isinstance(err, json.JSONDecodeError | UnicodeDecodeError) else "NIfTI"
        return Result("failed", f"cannot de-identify the {what} ({err.__class__.__name__})", kind="nifti")
    return Result("ok", "", tuple(temps), tuple(outputs), kind="nifti")
