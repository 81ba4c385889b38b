"""Lesions into scans on disk: read the scan and its organ mask, simulate (or replay), write every output.

    from medgan.lesions.scans import LesionRequest, simulate_scan
    outputs = simulate_scan("ct.nii.gz", "liver.nii.gz", "out/", LesionRequest(n=3, preset="ct-liver-hypo"))

Outputs, for a scan named NAME (its file name without suffix, or its DICOM series folder's name):

* NIfTI (or NRRD/MHA) input: `NAME_lesions.nii.gz` (the edited scan, its modality in the usual JSON
  sidecar) and `NAME_lesion_labels.nii.gz` (lesion i has label i);
* DICOM input: `NAME_lesions/`, a derived series marked synthetic, and `NAME_seg.dcm`, a DICOM SEG
  with one segment per lesion that references that series;
* always `NAME_lesion_records.json` (every lesion's record, replayable with `replay`), and
  `NAME_organ.nii.gz` when a lesion pushed the tissue (the organ mask or segmentation, pushed alike).

Everything is checked before anything is written (the inputs, the grids, that the lesions fit, that
no output exists unless `overwrite`); each output appears whole, and a failed write removes the ones
already written in that call.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

import medgan
from medgan.errors import ConfigError, InputError, MedganError, OutputError
from medgan.io.atomic import atomic_file, check_apart
from medgan.io.image import affine_of, make_image
from medgan.lesions.record import RECORD_FORMAT, RECORD_VERSION, record_from_dict

__all__ = ["LesionRequest", "ScanOutputs", "check_checkpoint", "output_paths", "replay_scan", "simulate_scan"]


@dataclass
class LesionRequest:
    """What to simulate (see `medgan simulate-lesions --help`)."""

    n: int = 3
    preset: str = "generic"  # a LESION_MODELS name
    diameter_mm: tuple[float, float] | None = None  # overrides the preset's range
    contrast: tuple[float, float] | None = None  # overrides the preset's range (its units)
    seed: int = 0
    margin_mm: float = 2.0
    gap_mm: float = 2.0
    label: int | None = None  # the organ's value in the mask; None: every nonzero voxel
    modality: str | None = None  # overrides the scan's recorded modality
    checkpoint: str | None = None  # learned lesion content (an inpaint checkpoint)
    mass_effect: float | None = None  # probability of a push; None: the preset's
    series: str | None = None  # which series of a DICOM folder
    overwrite: bool = False


@dataclass
class ScanOutputs:
    name: str
    image: str  # the edited scan (file or DICOM folder)
    labels: str  # label map or DICOM SEG
    records: str
    organ: str | None = None  # the pushed organ mask, when any lesion pushed
    lesions: list[dict] = field(default_factory=list)
    dicom: bool = False  # a DICOM series and SEG rather than NIfTI files


def check_checkpoint(path: str) -> None:
    """Refuse a checkpoint that cannot give learned lesion content, in one line naming its task."""
    from medgan.tasks.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    config = state.get("config") or {}
    task = config.get("task") if isinstance(config, dict) else None
    if task != "inpaint":
        raise ConfigError(f"is a checkpoint of task {task!r}; learned lesion content needs an inpaint "
                          "checkpoint, or leave out --model for procedural content", path=path)  # fmt: skip
    _learned(path)  # loads it (once), so a checkpoint that cannot be built fails before any scan is read


@functools.cache
def _learned(checkpoint: str):
    """The learned renderer of a checkpoint, loaded once for a batch of scans."""
    from medgan.lesions.textures import CONTENT_RENDERERS

    return CONTENT_RENDERERS.build("learned", checkpoint=checkpoint)


def scan_name(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def output_paths(out_dir: str, name: str, dicom: bool) -> ScanOutputs:
    def at(suffix: str) -> str:
        return os.path.join(out_dir, name + suffix)

    if dicom:
        return ScanOutputs(name, at("_lesions"), at("_seg.dcm"), at("_lesion_records.json"), at("_organ.nii.gz"),
                           dicom=True)  # fmt: skip
    return ScanOutputs(name, at("_lesions.nii.gz"), at("_lesion_labels.nii.gz"), at("_lesion_records.json"),
                       at("_organ.nii.gz"))  # fmt: skip


def _read(path: str, what: str, series: str | None = None):
    from medgan.io import read_image

    image = read_image(path, series=series)
    if image.ndim != 4 or image.shape[0] != 1:
        raise InputError(f"the {what} must be one 3D volume, got shape {tuple(image.shape)}", path=path)
    return image


def load_organ(mask_path: str, image, image_path: str, label: int | None):
    """(organ bool [i, j, k], the mask's labels on the image's grid [1, i, j, k]) or one clear InputError."""
    from medgan.data.transforms import onto_grid
    from medgan.io.geometry import describe_grid

    mask = _read(mask_path, "organ mask")
    values = mask.as_tensor()
    if values.is_floating_point() and not torch.equal(values, values.round()):
        raise InputError("an organ mask holds whole numbers (0 outside, labels inside), not fractions", path=mask_path)
    on_grid = onto_grid(values.long(), affine_of(mask), image.shape[1:], affine_of(image), labels=True)
    if on_grid is None:
        raise InputError(f"the organ mask ({describe_grid(mask.shape[1:], affine_of(mask))}) does not overlap the "
                         f"image {image_path} ({describe_grid(image.shape[1:], affine_of(image))})",
                         path=mask_path)  # fmt: skip
    present = sorted(int(v) for v in torch.unique(on_grid) if v != 0)
    if label is not None:
        if label not in present:
            listed = ", ".join(map(str, present[:20])) or "none"
            raise InputError(f"label {label} is not in the organ mask (labels present: {listed})", path=mask_path)
        organ = on_grid[0] == label
    else:
        organ = on_grid[0] != 0
    if not bool(organ.any()):
        raise InputError("the organ mask is empty (no nonzero voxel on the image's grid)", path=mask_path)
    return organ, on_grid


def _modality(image, request: LesionRequest, path: str) -> str:
    modality = (request.modality or str(image.meta.get("modality") or "")).upper()
    if not modality:
        raise InputError("the image records no modality; pass --modality CT or MR", path=path)
    return modality


def _check_outputs(outputs: ScanOutputs, overwrite: bool, inputs: list[tuple[str, str]]) -> None:
    for target in (outputs.image, outputs.labels, outputs.records, outputs.organ):
        check_apart(target, inputs, advice="another --out folder")
        if os.path.lexists(target) and not overwrite:  # checked without making the folder: nothing written yet
            raise OutputError("already exists; pass --overwrite to replace it", path=target)


def simulate_scan(image_path: str, mask_path: str, out_dir: str, request: LesionRequest, image=None,
                  name: str | None = None) -> ScanOutputs:  # fmt: skip
    """Simulate lesions into one scan and write its outputs (see the module docstring)."""
    from medgan.lesions.insert import simulate_lesions
    from medgan.lesions.models import LESION_MODELS

    renderer = "procedural"
    if request.checkpoint:
        check_checkpoint(request.checkpoint)
        renderer = _learned(request.checkpoint)  # loaded once for a batch
    image = _read(image_path, "image", request.series) if image is None else image
    dicom = str(image.meta.get("format") or "") == "dicom"
    outputs = output_paths(out_dir, name or scan_name(image_path), dicom)
    _check_outputs(outputs, request.overwrite, [("input image", image_path), ("organ mask", mask_path)])
    organ, segmentation = load_organ(mask_path, image, image_path, request.label)
    modality = _modality(image, request, image_path)
    ranges = {"diameter_mm": request.diameter_mm, "contrast": request.contrast,
              "mass_effect_probability": request.mass_effect}  # fmt: skip
    model = LESION_MODELS.build(request.preset, **ranges)
    try:
        result = simulate_lesions(image, organ, affine=affine_of(image), modality=modality, n=request.n, model=model,
                                  seed=request.seed, margin_mm=request.margin_mm, gap_mm=request.gap_mm,
                                  segmentation=segmentation[0], renderer=renderer)  # fmt: skip
    except MedganError as err:
        raise InputError(err.reason, path=image_path) from None
    header = {"request": {k: v for k, v in asdict(request).items() if k not in ("overwrite", "checkpoint", "series")}}
    return _write(image, result, outputs, modality, image_path, header, request.overwrite)


def replay_scan(image_path: str, mask_path: str, records_path: str, out_dir: str, overwrite: bool = False,
                label: int | None = None, series: str | None = None) -> ScanOutputs:  # fmt: skip
    """Render a records file again on its scan: the identical outputs (DICOM: identical pixels, new UIDs)."""
    from medgan.lesions.insert import replay_lesions

    saved = _load_records(records_path)
    image = _read(image_path, "image", series)
    dicom = str(image.meta.get("format") or "") == "dicom"
    outputs = output_paths(out_dir, scan_name(image_path), dicom)
    _check_outputs(outputs, overwrite, [("input image", image_path), ("organ mask", mask_path),
                                        ("records file", records_path)])  # fmt: skip
    _check_same_grid(saved, image, records_path)
    request = saved.get("request") or {}
    label = label if label is not None else request.get("label")
    organ, segmentation = load_organ(mask_path, image, image_path, label)
    records = [record_from_dict(r, records_path) for r in saved["lesions"]]
    try:
        result = replay_lesions(image, organ, records, affine=affine_of(image), segmentation=segmentation[0])
    except MedganError as err:
        raise InputError(err.reason, path=image_path) from None
    return _write(image, result, outputs, saved["image"]["modality"], image_path, {"request": request}, overwrite)


def _sidecar(path: str) -> str:
    """The JSON sidecar NIfTI output gets (medgan.io.nifti), so a failed call removes it too."""
    return (path[: -len(".nii.gz")] if path.endswith(".nii.gz") else os.path.splitext(path)[0]) + ".json"


def _load_records(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            saved = json.load(fh)
    except FileNotFoundError:
        raise InputError("no such records file", path=path) from None
    except (OSError, ValueError) as err:
        raise InputError(f"not a readable JSON file ({err})", path=path) from None
    if not isinstance(saved, dict) or saved.get("format") != RECORD_FORMAT or "lesions" not in saved:
        raise InputError(f"not a lesion records file (written as {RECORD_FORMAT} by simulate-lesions)", path=path)
    if saved.get("version") != RECORD_VERSION:
        raise InputError(f"records version {saved.get('version')} is not {RECORD_VERSION}, which this medgan replays",
                         path=path)  # fmt: skip
    return saved


def _check_same_grid(saved: dict, image, path: str) -> None:
    from medgan.io.geometry import describe_grid

    grid = saved.get("image") or {}
    shape, affine = tuple(grid.get("shape") or ()), np.asarray(grid.get("affine") or np.eye(4), float)
    if shape != tuple(image.shape[1:]) or not np.allclose(affine, affine_of(image), atol=1e-4):
        raise InputError(f"the records were made on another grid ({describe_grid(shape, affine)}) than this image's "
                         f"({describe_grid(image.shape[1:], affine_of(image))})", path=path)  # fmt: skip


def _write(image, result, outputs: ScanOutputs, modality: str, source: str, header: dict, overwrite: bool):
    from medgan.io import write_image

    records = result.records
    meta = {k: v for k, v in image.meta.items() if k not in ("affine", "original_affine", "spatial_shape")}
    meta.update({"modality": modality, "synthetic": True,
                 "description": f"medgan simulated lesions ({len(records)})"})  # fmt: skip
    edited = make_image(result.image.as_tensor().numpy(), affine_of(image), meta)
    labels = make_image(result.labels.numpy().astype(np.int16), affine_of(image), {})
    dicom = outputs.dicom
    pushed = any(r.mass_effect is not None for r in records)
    document = {"format": RECORD_FORMAT, "version": RECORD_VERSION, "medgan": medgan.__version__,
                "source": os.path.basename(os.path.normpath(source)),
                "image": {"shape": list(image.shape[1:]), "affine": affine_of(image).tolist(), "modality": modality},
                **header, "lesions": [r.to_dict() for r in records]}  # fmt: skip
    written: list[str] = []
    try:
        if dicom:
            from medgan.io.seg import write_seg

            preset = records[0].preset if records else "-"
            description = f"medgan simulated lesions: {len(records)}, preset {preset}"
            written.append(write_image(edited, outputs.image, to="dicom", overwrite=overwrite, modality=modality,
                                       synthetic=True, derivation_description=description,
                                       series_description="SIMULATED LESIONS medgan"))  # fmt: skip
            segments = {r.label: f"simulated lesion {r.index}" for r in records}
            written.append(write_seg(labels, outputs.image, outputs.labels, segments=segments, overwrite=overwrite))
        else:
            written.append(write_image(edited, outputs.image, overwrite=overwrite))
            written.append(_sidecar(outputs.image))
            written.append(write_image(labels, outputs.labels, overwrite=overwrite))
        if pushed:
            organ = make_image(result.segmentation[None].numpy().astype(np.int16), affine_of(image), {})
            written.append(write_image(organ, outputs.organ, overwrite=overwrite))
        with atomic_file(outputs.records, overwrite, suffix=".json") as temp, open(temp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(document, indent=1) + "\n")
        written.append(outputs.records)
    except BaseException:
        for path in written:  # a half set of outputs is worse than none
            with contextlib.suppress(OSError):
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        raise
    outputs.organ = outputs.organ if pushed else None
    outputs.lesions = [r.to_dict() for r in records]
    return outputs
