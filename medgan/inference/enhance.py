"""Enhance scans with a trained image-to-image checkpoint: denoise, super-resolve, translate a contrast.

    from medgan.inference.enhance import enhance
    report = enhance("lowdose/chest.nii.gz", "runs/denoise/checkpoints/step_0100000.pt", "chest_enhanced.nii.gz")
    report = enhance("lowdose_scans/", "runs/denoise/checkpoints/step_0100000.pt", "enhanced/")  # a batch

Each scan is read in physical units, turned to the training data's axis order, resampled to the
training voxel size (for super-resolution that is the fine target grid), windowed as in training,
run through the generator (EMA weights) over its whole extent with Gaussian-blended sliding windows
(`medgan.inference.whole_scan`), brought back to physical units and to the scan's own axis order,
and written: NIfTI in, NIfTI out (with a JSON sidecar); a DICOM series in, a derived DICOM series
out, in the source's study and frame of reference, referencing the source instances, its
DerivationDescription naming the checkpoint. The output is on the scan's own grid when the voxel
size is unchanged (the same affine), else on the resampled one.

Every option and the checkpoint are checked, and every output name, before the first scan is
read; a folder of scans goes on past a bad scan and records each scan in `report.json` and
`report.csv`.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from medgan.errors import ConfigError, InputError, MedganError, OutputError, describe
from medgan.inference.enhance_scan import Enhancer, output_meta
from medgan.inference.load import load_generators
from medgan.inference.synthesize import resolve_device
from medgan.inference.write import output_kind

__all__ = ["FORMATS", "EnhanceReport", "ScanResult", "enhance"]

FORMATS = ("nifti", "dicom")
_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


@dataclass
class ScanResult:
    """What happened to one input scan."""

    input: str
    output: str  # the file or DICOM folder written ("" when it failed)
    status: str  # "ok" or "failed"
    seconds: float
    error: str = ""  # the one-line reason of a failure


@dataclass
class EnhanceReport:
    """Every scan's result; for a folder, where its report was written."""

    results: list[ScanResult] = field(default_factory=list)
    report_json: str | None = None
    report_csv: str | None = None

    @property
    def failed(self) -> list[ScanResult]:
        return [r for r in self.results if r.status != "ok"]


@dataclass
class _Job:
    source: str  # the file, or the folder a DICOM series came from
    load: Callable[[], object]  # -> MetaTensor
    is_dicom: bool
    output: str = ""
    format: str = ""  # nifti, nrrd, mha or dicom


def enhance(
    inputs: str,  # a scan (a file, or a DICOM series folder) or a folder of scans
    checkpoint: str,  # a training checkpoint of a task that translates one scan (pix2pix, cyclegan, ...)
    out: str,  # one scan: the output file (or DICOM folder); a folder of scans: the output folder
    patch: Sequence[int] | None = None,  # window in voxels per axis (one: every axis); default: the training size
    overlap: float = 0.5,  # fraction of a window shared with its neighbour, in [0, 1)
    batch_size: int = 4,  # windows per network call
    device: str = "auto",  # auto (a GPU when there is one), cpu, cuda or cuda:N
    slice_wise: bool = False,  # a 2D checkpoint on a 3D scan: apply it slice by slice
    format: str | None = None,  # nifti or dicom; default: the input's (and OUT's suffix for one scan)
    overwrite: bool = False,
    precision: str = "auto",  # auto (bf16 on a GPU, fp32 on the CPU), fp32 or bf16
    series: str | None = None,  # a DICOM folder holding several series: enhance this one
    modality: str | None = None,  # DICOM output when the checkpoint recorded no modality (CT or MR)
    copy_patient: bool = False,  # DICOM output: copy the source's patient identity and descriptions
    progress: Callable[[int, int, ScanResult], None] | None = None,  # (index, count, result) after a folder's scans
) -> EnhanceReport:
    """Enhance one scan or every scan under a folder; returns what happened to each (see the module)."""
    if format is not None and format not in FORMATS:
        raise ConfigError(f"unknown output format {format!r} (choose {', '.join(FORMATS)})")
    if not os.path.exists(inputs):
        raise InputError("no such file or folder", path=inputs)
    from medgan.io.atomic import check_apart

    check_apart(out, [("input", inputs)], advice="another --out")
    dev = resolve_device(device)
    jobs, problems, batch = _find_scans(inputs, series)
    _plan(jobs, inputs, out, format, batch)
    model = load_generators(checkpoint, dev)
    enhancer = Enhancer(model, patch, overlap, batch_size, dev, slice_wise, precision)
    kinds = {f: output_kind(model.made, None, modality, f, checkpoint) for f in {j.format for j in jobs}}
    _check_outputs(jobs, out if batch else None, overwrite)
    report = EnhanceReport([ScanResult(p.path, "", "failed", 0.0, p.reason) for p in problems])
    for index, job in enumerate(jobs, start=1):
        started = time.perf_counter()
        try:
            written = _enhance_one(enhancer, job, kinds[job.format], overwrite, copy_patient)
            result = ScanResult(job.source, written, "ok", time.perf_counter() - started)
        except (MedganError, ValueError, RuntimeError, OSError) as err:
            reason = _reason(err)
            if not batch:
                raise (err if isinstance(err, MedganError) else ConfigError(reason)) from None
            result = ScanResult(job.source, "", "failed", time.perf_counter() - started, reason)
        report.results.append(result)
        if progress is not None and batch:
            progress(index, len(jobs), result)
    if batch:
        report.report_json, report.report_csv = _write_report(report, out, enhancer, checkpoint)
    return report


def _reason(err: BaseException) -> str:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return "out of GPU memory: lower --batch or --patch, or run with --device cpu"
    return str(err) if isinstance(err, MedganError) else describe(err)


def _find_scans(inputs: str, series: str | None) -> tuple[list[_Job], list, bool]:
    """The scans under `inputs`, unreadable files, and whether it is a batch: a folder is one scan only when it
    is one DICOM series itself (or --series picks one)."""
    from medgan.io import find_images, format_of, read_image

    if not os.path.isdir(inputs) or series is not None:
        return [_Job(inputs, lambda: read_image(inputs, series=series), format_of(inputs) == "dicom")], [], False
    found, problems = find_images(inputs, skip_invalid=True)
    if len(found) == 1 and not problems and found[0].format == "dicom" and os.path.samefile(found[0].source, inputs):
        return [_Job(inputs, lambda: read_image(inputs), True)], [], False
    if not found and not problems:
        raise InputError("no scans found (NIfTI, NRRD, MHA or DICOM)", path=inputs)
    return [_Job(f.source, f.load, f.format == "dicom") for f in found], problems, True


def _plan(jobs: list[_Job], inputs: str, out: str, format: str | None, batch: bool) -> None:
    """Each scan's output path and format. One scan's follow OUT's suffix, `format` or the input's; in a folder
    each scan keeps its relative name (a DICOM series its folder's, numbered when a folder holds several), with
    `format`'s suffix when given."""
    from medgan.io import format_of

    if not batch:
        jobs[0].output, jobs[0].format = out, _single_format(jobs[0], out, format)
        return
    per_folder: dict[str, int] = {}
    for job in jobs:
        if job.is_dicom:
            per_folder[job.source] = per_folder.get(job.source, 0) + 1
    numbered: dict[str, int] = {}
    for job in jobs:
        relative = os.path.relpath(job.source, inputs)
        if job.is_dicom:
            relative = os.path.basename(os.path.abspath(inputs)) if relative == "." else relative
            if per_folder[job.source] > 1:
                numbered[job.source] = numbered.get(job.source, 0) + 1
                relative = f"{relative}_{numbered[job.source]}"
        job.format = format or ("dicom" if job.is_dicom else format_of(job.source))
        if job.format == "nifti" and (job.is_dicom or format_of(relative) != "nifti"):
            relative = _stem(relative) + ".nii.gz"
        elif job.format == "dicom" and not job.is_dicom:
            relative = _stem(relative)
        job.output = os.path.join(out, relative)


def _single_format(job: _Job, out: str, format: str | None) -> str:
    from medgan.io import format_of

    named = out.lower().endswith(_VOLUME_SUFFIXES)
    if format == "dicom" and named:
        raise OutputError("DICOM output is a folder of files; give --out a folder name without a suffix", path=out)
    if format == "nifti" and not out.lower().endswith((".nii.gz", ".nii")):
        raise OutputError("NIfTI output needs a name ending in .nii.gz or .nii", path=out)
    if named:
        return format_of(out)
    if format == "dicom" or (format is None and job.is_dicom):
        return "dicom"
    raise OutputError("cannot tell the output format from the name: end it in .nii.gz (or .nii, .nrrd, .mha), "
                      "or pass --format dicom for a DICOM series folder", path=out)  # fmt: skip


def _stem(name: str) -> str:
    lower = name.lower()
    for suffix in _VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_outputs(jobs: list[_Job], folder: str | None, overwrite: bool) -> None:
    """Refuse, before anything is written, outputs that exist (and NIfTI sidecars, and a folder's reports)."""
    paths = []
    for job in jobs:
        paths.append(job.output)
        if job.format == "nifti":
            paths.append(_stem(job.output) + ".json")
    if folder is not None:
        paths += [os.path.join(folder, "report.json"), os.path.join(folder, "report.csv")]
    taken = [p for p in paths if os.path.lexists(p)]
    if taken and not overwrite:
        what = "already exists" + (f", as do {len(taken) - 1} other outputs" if len(taken) > 1 else "")
        raise OutputError(f"{what}; pass --overwrite to replace, or choose another --out", path=taken[0])
    seen = set()
    for path in [j.output for j in jobs]:
        if path in seen:
            raise OutputError("two scans would be written here; give them other names or run them apart", path=path)
        seen.add(path)


def _enhance_one(enhancer: Enhancer, job: _Job, kind: tuple[str, str], overwrite: bool, copy_patient: bool) -> str:
    from medgan.io import write_image
    from medgan.io.image import make_image

    image = job.load()
    output, affine, same_grid = enhancer.run(image, job.source)
    meta, options = output_meta(enhancer, image, kind, affine, output.shape[1:], same_grid, copy_patient)
    scan = make_image(output.numpy().astype(np.float32), affine, meta)
    if job.format != "dicom":
        return write_image(scan, job.output, overwrite=overwrite)
    return write_image(scan, job.output, to="dicom", overwrite=overwrite, modality=kind[0], synthetic=True,
                       copy_patient=copy_patient, same_study=True, **options)  # fmt: skip


def _write_report(report: EnhanceReport, folder: str, enhancer: Enhancer, checkpoint: str) -> tuple[str, str]:
    from medgan.io.atomic import atomic_file

    os.makedirs(folder, exist_ok=True)
    rows = [asdict(r) for r in report.results]
    document = {"checkpoint": os.path.abspath(checkpoint), **enhancer.settings(),
                "ok": len(rows) - len(report.failed), "failed": len(report.failed), "scans": rows}  # fmt: skip
    paths = os.path.join(folder, "report.json"), os.path.join(folder, "report.csv")
    with atomic_file(paths[0], overwrite=True, suffix=".json") as temp, open(temp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(document, indent=2) + "\n")
    with atomic_file(paths[1], overwrite=True, suffix=".csv") as temp, open(temp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["input", "output", "status", "seconds", "error"])
        writer.writeheader()
        writer.writerows({**r, "seconds": f"{r['seconds']:.3f}"} for r in rows)
    return paths
