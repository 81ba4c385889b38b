"""Degrade scans on disk: one scan to one output plus a JSON record, or a folder of scans as a batch.

The output keeps the input's format (a DICOM input becomes a derived DICOM series) unless its name
or `to` says otherwise, and its geometry (resolution kinds update the spacing). Beside it,
`<output>.json` holds the record: kind, every parameter, seeds, medgan's version and the input path,
enough to replay it exactly (`record=`). Parameters are checked before anything is read or written;
image and record appear together or not at all.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medgan.data.degradations.registry import DEGRADATIONS
from medgan.data.degradations.scan import degrade_image
from medgan.errors import ConfigError, InputError, MedganError, OutputError, describe

__all__ = ["BatchSummary", "degrade_file", "degrade_tree", "load_record", "record_path"]

_VOLUME_SUFFIXES = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha"}


def record_path(output: str) -> str:
    """Where the record of `output` goes: `<output>.json` (a DICOM folder's record sits beside it)."""
    return os.fspath(output).rstrip("/\\") + ".json"


def load_record(path: str) -> dict:
    """The record inside a JSON file written by `degrade_file` (or a bare record)."""
    try:
        with open(path, encoding="utf-8") as fh:
            document = json.load(fh)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the record ({describe(err)})", path=path) from None
    record = document.get("record", document) if isinstance(document, dict) else None
    if not isinstance(record, dict) or "kind" not in record:
        raise InputError("holds no degradation record (no 'kind')", path=path)
    return record


def check_settings(kind: str | None, severity: Any, params: dict[str, Any], record: dict | None) -> None:
    """Build the degradation once so that a bad kind or parameter fails before any file is touched."""
    if record is not None:
        DEGRADATIONS.get(str(record.get("kind")))().check_record(record)
        return
    if kind is None:
        raise ConfigError(f"choose a degradation with --kind (valid: {', '.join(DEGRADATIONS.names())})")
    DEGRADATIONS.get(kind)(severity=severity, **params)


def _output_format(source_format: str, output: str, to: str | None) -> str | None:
    """`to` for write_image: as asked, by the output's suffix, or DICOM for a DICOM input. A name that
    says no format, or another one than `to`, fails here, before any work."""
    from medgan.io import WRITE_SUFFIXES, format_of

    named = output.lower().endswith(WRITE_SUFFIXES)
    if to not in (None, "dicom") and named and format_of(output) != to:
        raise OutputError(f"the name says {format_of(output)} but --to says {to}; make them agree", path=output)
    if to is not None:
        return to
    if named:
        return None
    if source_format == "dicom":
        return "dicom"
    raise OutputError(
        f"cannot tell the output format from the name; use one of {', '.join(WRITE_SUFFIXES)}, "
        "or --to dicom for a DICOM series folder",
        path=output,
    )


def degrade_file(
    source: str,
    output: str,
    kind: str | None = None,  # a name in DEGRADATIONS (not needed with `record`)
    seed: int = 0,  # draws the parameters within their ranges and the noise
    severity: Any = None,  # 0 mild .. 1 severe, or a (low, high) range
    params: dict[str, Any] | None = None,  # explicit physical parameters
    record: dict | None = None,  # replay this record
    to: str | None = None,  # nifti, nrrd, mha or dicom (default: the input's format / OUTPUT's suffix)
    overwrite: bool = False,
    series: str | None = None,  # a DICOM folder's series, when it holds several
    loaded=None,  # the image, when the caller has read it already
    extra: dict | None = None,  # further fields for the JSON document (a batch's seed)
    copy_patient: bool = False,  # DICOM output: copy the source's patient identity (off: none is written)
) -> dict:
    """Degrade one scan into `output` and write `<output>.json`; returns the JSON document."""
    from medgan.io import format_of, read_image, write_image
    from medgan.io.atomic import atomic_file, check_apart, check_output

    params = dict(params or {})
    check_settings(kind, severity, params, record)
    check_apart(output, [("input", source)], advice="another OUT")
    target = _output_format(format_of(source), output, to)
    check_output(output, overwrite)
    json_path = check_output(record_path(output), overwrite)
    image = loaded if loaded is not None else read_image(source, series=series)
    degraded, used = degrade_image(image, kind, seed, severity, record, path=source, **params)
    document = {
        "medgan_version": used["medgan_version"],
        "input": os.fspath(source),
        "output": os.fspath(output),
        "kind": used["kind"],
        "seed": seed if record is None else None,
        "requested": {"severity": severity, **params} if record is None else "replayed",
        **(extra or {}),
        "record": used,
    }
    options = {}
    if target == "dicom":
        options = {
            "copy_patient": copy_patient,
            "modality": _modality(degraded, used["kind"]),
            "series_description": f"SIMULATED medgan {used['kind']}"[:64],
            "derivation_description": _derivation(used),
            "synthetic": True,  # simulated acquisition: the noise, blur or artefacts were made, not measured
            "by_network": False,  # made by physics, not a network: derivation "Image Processing"
        }
    with atomic_file(json_path, overwrite=overwrite, suffix=".json") as temp:
        with open(temp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(document, indent=2) + "\n")
        write_image(degraded, output, to=target, overwrite=overwrite, **options)
    return document


def _modality(image, kind: str) -> str | None:
    modality = str((getattr(image, "meta", {}) or {}).get("modality") or "").upper()
    if modality:
        return modality
    return "CT" if kind.startswith("ct-") else "MR" if kind.startswith("mr-") else None


def _derivation(record: dict) -> str:
    """DerivationDescription: what was simulated, with its parameters (no file names)."""
    cls = DEGRADATIONS.get(record["kind"])
    values = ", ".join(f"{p.name} {record[p.name]:.4g}" if isinstance(record[p.name], float) else
                       f"{p.name} {record[p.name]}" for p in cls.params)  # fmt: skip
    return f"simulated {record['kind']} degradation by medgan {record['medgan_version']}: {values}"


@dataclass
class BatchSummary:
    """What a batch did: outputs written and inputs that failed (with the reason)."""

    ok: list[tuple[str, str]] = field(default_factory=list)  # (input, output)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    report: str = ""


def scan_seed(seed: int, relative: str) -> int:
    """A scan's own seed in a batch: from the batch seed and its path, so adding scans changes no other's."""
    digest = hashlib.sha256(f"{seed}:{relative}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**62


def degrade_tree(
    source: str,
    output: str,
    kind: str | None = None,
    seed: int = 0,
    severity: Any = None,
    params: dict[str, Any] | None = None,
    to: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int, str, str, str], None] | None = None,  # (i, n, input, output or reason, status)
    copy_patient: bool = False,  # DICOM outputs: copy each source's patient identity
) -> BatchSummary:
    """Degrade every scan under the folder `source` into the folder `output` (same relative layout), each
    with its record; a scan that fails is reported and the batch goes on. Writes `output/report.csv`."""
    from medgan.io import find_images
    from medgan.io.atomic import atomic_file, check_apart

    params = dict(params or {})
    check_settings(kind, severity, params, None)
    check_apart(output, [("input folder", source)], advice="another OUT")
    found, problems = find_images(source, skip_invalid=True)
    if not found and not problems:
        raise InputError("no scans found", path=source)
    summary = BatchSummary(failures=[(p.path, p.reason) for p in problems])
    jobs = _plan_outputs(found, source, output, to)
    for index, (image, target) in enumerate(jobs, start=1):
        relative = os.path.relpath(target, output)
        started = time.monotonic()
        try:
            loaded = image.load()
            degrade_file(
                image.source, target, kind, scan_seed(seed, relative), severity, params, None, to, overwrite,
                loaded=loaded, extra={"batch_seed": seed}, copy_patient=copy_patient,
            )  # fmt: skip
        except (MedganError, ValueError, RuntimeError, OSError) as err:
            reason = str(err) if isinstance(err, MedganError) else describe(err)
            summary.failures.append((image.source, reason))
            if progress:
                progress(index, len(jobs), image.source, reason, "failed")
            continue
        summary.ok.append((image.source, target))
        if progress:
            progress(index, len(jobs), image.source, f"{target} ({time.monotonic() - started:.1f} s)", "ok")
    summary.report = os.path.join(output, "report.csv")
    with atomic_file(summary.report, overwrite=True, suffix=".csv") as temp, open(temp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input", "output", "status", "reason"])
        writer.writerows([src, dst, "ok", ""] for src, dst in summary.ok)
        writer.writerows([src, "", "failed", reason] for src, reason in summary.failures)
    return summary


def _plan_outputs(found, source: str, output: str, to: str | None) -> list[tuple[Any, str]]:
    """Each found image and its output path: files keep their relative name (with `to`'s suffix when
    given); a DICOM series becomes a folder named after its own (numbered when a folder holds several)."""
    jobs, per_folder = [], {}
    for image in found:
        if image.format == "dicom":
            per_folder[image.source] = per_folder.get(image.source, 0) + 1
    seen: dict[str, int] = {}
    for image in found:
        relative = os.path.relpath(image.source, source)
        if image.format == "dicom":
            relative = os.path.basename(os.path.abspath(source)) if relative == "." else relative
            if per_folder[image.source] > 1:
                seen[image.source] = seen.get(image.source, 0) + 1
                relative = f"{relative}_{seen[image.source]}"
            if to in _VOLUME_SUFFIXES:
                relative += _VOLUME_SUFFIXES[to]
        elif to is not None:
            gz = relative.lower().endswith(".nii.gz")
            stem = relative[: -len(".nii.gz")] if gz else os.path.splitext(relative)[0]
            relative = stem + _VOLUME_SUFFIXES.get(to, "")
        elif relative.lower().endswith((".mhd", ".nhdr")):  # headers with detached data: written as one file
            relative = os.path.splitext(relative)[0] + _VOLUME_SUFFIXES[image.format]
        jobs.append((image, os.path.join(output, relative)))
    return jobs
