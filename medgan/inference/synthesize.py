"""Synthetic scans from a training checkpoint, written like the training data (spacing, HU).

    from medgan.inference import synthesize
    paths = synthesize("runs/ct-00000/checkpoints/step_0010000.pt", count=8, out_dir="synth/", seed=1)

Latent checkpoints (unconditional, conditional) draw `count` scans from noise; image-to-image
checkpoints (pix2pix, cyclegan A->B, label2image) translate the scans under `inputs`. The
generator's EMA weights are used. Intensities go back through the window recorded at
training time to physical units (HU for CT), the voxel size is the training spacing, and
every output is marked synthetic (DICOM SyntheticData YES). The same checkpoint, seed and
batch size give the same scans.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medgan.errors import ConfigError, InputError, OutputError
from medgan.inference.png import to_uint8, write_png

__all__ = ["FORMATS", "load_generators", "synthesize"]

FORMATS = ("nifti", "dicom", "png")


def load_generators(checkpoint: str, device: str | torch.device = "cpu") -> tuple[dict[str, nn.Module], Any, dict]:
    """The EMA generators of a checkpoint (eval mode, on `device`), its config and its data record."""
    from medgan.training import build
    from medgan.training.checkpoint import load_checkpoint
    from medgan.training.config import TrainConfig
    from medgan.training.objectives import OBJECTIVES

    state = load_checkpoint(checkpoint)
    try:
        cfg = TrainConfig.model_validate(state["config"])
    except ValueError as err:
        raise InputError(f"the checkpoint's config is not valid for this medgan ({str(err).splitlines()[0]})",
                         path=checkpoint) from None  # fmt: skip
    record = state["data_record"]
    task = OBJECTIVES.get(cfg.task)
    sizes = task.func.network_kwargs(record, **task.keywords)
    roles = {r: k for r, k in task.func.ROLES.items() if k == "generator"}
    nets = build.build_networks(roles, sizes, cfg.generator, cfg.discriminator, cfg.data.spatial_dims,
                                cfg.data.image_size, 1)  # fmt: skip
    weights = state.get("ema") or state["networks"]
    for name, net in nets.items():
        try:
            net.load_state_dict(weights[name])
        except (KeyError, RuntimeError) as err:
            raise InputError(f"the checkpoint's weights do not fit its config ({str(err).splitlines()[0][:120]})",
                             path=checkpoint) from None  # fmt: skip
        net.to(device).eval().requires_grad_(False)
    return nets, cfg, record


def synthesize(
    checkpoint: str,
    count: int = 8,  # scans to draw (latent checkpoints)
    out_dir: str = "synthetic",
    format: str = "nifti",  # nifti, dicom (a series folder per scan, SyntheticData YES) or png (preview)
    seed: int = 0,  # same seed, same scans
    batch_size: int = 8,
    class_index: int | None = None,  # conditional checkpoints: this class for all; None cycles the classes
    inputs: str | None = None,  # image-to-image checkpoints: a scan, a folder of scans, or a CSV
    modality: str | None = None,  # for DICOM output when the training data recorded none (CT or MR)
    device: str = "auto",
    overwrite: bool = False,
    whole_slab: bool = False,  # 2.5D checkpoints: write each sample's whole slab as a thin volume
) -> list[str]:
    """Generate scans and write them under `out_dir`; returns the paths written."""
    if format not in FORMATS:
        raise ConfigError(f"unknown output format {format!r} (choose {', '.join(FORMATS)})")
    if count < 1 or batch_size < 1:
        raise ConfigError("the scan count and the batch size must be at least 1")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA GPU is visible here; use --device cpu or auto")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r} (choose auto, cpu, cuda or cuda:N)")
    dev = torch.device("cpu" if device == "cpu" or not torch.cuda.is_available() else device.replace("auto", "cuda"))
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise OutputError("is a file, not a folder; choose another --out", path=out_dir)
    try:
        nets, cfg, record = load_generators(checkpoint, dev)
        made = output_record(record, cfg.task)
        if nets.get("G") is not None and nets["G"].kind == "latent":
            if inputs is not None:
                raise ConfigError("this checkpoint draws scans from noise; drop --input")
            classes = getattr(nets["G"], "num_classes", 0) or 0
            labels = [class_index if class_index is not None else i % classes for i in range(count)] if classes \
                else [None] * count  # fmt: skip
            kinds = [_output_kind(made, label, modality, format, checkpoint) for label in labels]
            images = _from_noise(nets["G"], record, count, seed, batch_size, class_index, dev, whole_slab)
        else:
            if whole_slab:
                raise ConfigError("--whole-slab is for checkpoints that draw slabs from noise; a translation "
                                  "already writes every slice of the scan")  # fmt: skip
            if inputs is None:
                raise ConfigError(f"a {cfg.task} checkpoint translates scans: pass --input FILE_OR_FOLDER")
            kinds = [_output_kind(made, None, modality, format, checkpoint)]
            images = _translate_all(nets, cfg, record, inputs, batch_size, dev)
    except torch.cuda.OutOfMemoryError:
        raise ConfigError("out of GPU memory: lower --batch, or run with device cpu") from None
    names = [os.path.join(out_dir, f"synthetic_{i:04d}{_SUFFIX[format]}") for i in range(len(images))]
    existing = [n for n in names if os.path.lexists(n)]
    if existing and not overwrite:  # checked for every output before writing any: never a folder of two runs
        raise OutputError(f"{len(existing)} of the {len(names)} outputs already exist (the first: "
                          f"{os.path.basename(existing[0])}); pass --overwrite or choose another --out",
                          path=out_dir)  # fmt: skip
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the folder ({err.strerror or err})", path=out_dir) from None
    paths = []
    for i, image in enumerate(images):
        kind, units = kinds[min(i, len(kinds) - 1)]
        meta = {"modality": kind, "units": units, "synthetic": True,
                "description": f"medgan synthetic {cfg.task} (seed {seed}, sample {i})"}  # fmt: skip
        paths.append(_write(image, meta, out_dir, f"synthetic_{i:04d}", format, made["window"], overwrite))
    return paths


def _output_kind(made: dict, label: int | None, modality: str | None, format: str, checkpoint: str) -> tuple[str, str]:
    """(modality, units) of one output: its class's (conditional checkpoints record them per class),
    else the training data's; `modality` (--modality) overrides. Checked before anything is made."""
    per_class = made.get("class_kinds") or []
    if label is not None and per_class and not 0 <= label < len(per_class):
        return "", ""  # no such class: drawing refuses it, naming the classes there are
    if label is not None and per_class:
        kinds, where = [tuple(k) for k in per_class[label]], f"class {label}"
    elif made.get("modality") or len(made.get("modalities") or []) <= 1:
        kinds, where = [(made.get("modality") or "", made.get("units") or "")], "the training data"
    else:  # scans of several modalities, not told apart by class
        kinds, where = [(m, "") for m in made["modalities"]], "the training data"
    if modality:
        wanted = modality.upper()
        units = [u for m, u in kinds if m == wanted]
        return wanted, units[0] if units else ("HU" if wanted == "CT" else "")
    names = sorted({m or "?" for m, _ in kinds})
    if len(names) == 1:  # one modality (its units may be spelled differently by different files)
        kind = (kinds[0][0] or "").upper(), kinds[0][1]
        if format == "dicom" and kind[0] not in ("CT", "MR"):
            raise OutputError(f"DICOM output needs the modality CT or MR; {where} recorded "
                              f"{kind[0] or 'none'}: pass --modality CT or MR", path=checkpoint)  # fmt: skip
        return kind
    if format == "dicom" and len(names) > 1:
        raise OutputError(f"{where} mixes {' and '.join(names)} scans, so DICOM "
                          "output cannot tell which modality to write: pass --modality CT or MR",
                          path=checkpoint)  # fmt: skip
    if format == "dicom" and not kinds:
        raise OutputError(f"{where} had no training scans, so no modality was recorded for it: pass --modality CT "
                          "or MR", path=checkpoint)  # fmt: skip
    return "", ""


def output_record(record: dict, task: str) -> dict:
    """The data record of what a checkpoint's generator makes: domain B's for CycleGAN (A -> B), whose
    modality, units and window are B's, not A's; the training images' otherwise."""
    return record["domain_b"] if task == "cyclegan" else record


@torch.no_grad()
def _from_noise(g: nn.Module, record: dict, count: int, seed: int, batch_size: int, class_index: int | None,
                device: torch.device, whole_slab: bool = False) -> list[tuple[Tensor, np.ndarray]]:  # fmt: skip
    classes = getattr(g, "num_classes", 0) or 0
    slab = record["channels"] // record["image_channels"]
    if whole_slab and (slab == 1 or len(record["axes"]) != 2):
        raise ConfigError("--whole-slab needs a 2.5D checkpoint (trained with data.slab_slices > 1); "
                          "this one makes single slices or volumes")  # fmt: skip
    pick = _slab if whole_slab else _middle
    if class_index is not None and not classes:
        raise ConfigError("--class needs a class-conditional checkpoint; this one is unconditional")
    if class_index is not None and not 0 <= class_index < classes:
        raise ConfigError(f"--class {class_index}: this checkpoint knows classes 0 to {classes - 1}")
    z = torch.randn(count, g.latent_dim, generator=torch.Generator().manual_seed(seed))  # on the CPU: any device
    labels = torch.full((count,), class_index) if class_index is not None else torch.arange(count) % max(classes, 1)
    out = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # networks that draw their own noise (StyleGAN) draw it reproducibly
        for start in range(0, count, batch_size):
            zs, ls = z[start : start + batch_size].to(device), labels[start : start + batch_size].to(device)
            images = g(zs, ls if classes else None).float().cpu()
            picked = [pick(image, record) for image in images]
            out += [(image, _affine(record, image.shape[1:])) for image in picked]
    return [(_physical(image, record["window"]), affine) for image, affine in out]


def _middle(image: Tensor, record: dict) -> Tensor:
    """The middle slice of a 2.5D slab (all of that slice's channels); the image itself otherwise."""
    per_slice = record["image_channels"]
    middle = (record["channels"] // per_slice) // 2
    return image[middle * per_slice : (middle + 1) * per_slice]


def _slab(image: Tensor, record: dict) -> Tensor:
    """A 2.5D sample's slices stacked along a third array axis, the slice axis of `_affine`: [C, a, b, slab]."""
    per_slice = record["image_channels"]
    return torch.stack(image.split(per_slice), dim=-1)


def _physical(image: Tensor, window: list[float]) -> Tensor:
    from medgan.data.transforms import from_unit

    return from_unit(image, *window)


def _affine(record: dict, shape: Sequence[int]) -> np.ndarray:
    """The training data's orientation and spacing; the field of view (of `shape`) centred on the origin."""
    directions = np.asarray(record["directions"], dtype=np.float64)  # 3x3, columns: the source's array axes
    affine = np.eye(4)
    axes = record["axes"]
    for column, axis in enumerate(axes):
        affine[:3, column] = directions[:, axis] * record["spacing_mm"][column]
    if len(axes) == 2:  # a 2D image from 3D scans: the third column is the slice axis
        affine[:3, 2] = directions[:, record["slice_axis"]] * (record.get("slice_spacing_mm") or 1.0)
    centre = (np.asarray(list(shape)[:3] + [1] * (3 - len(shape)), dtype=np.float64) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def _translate_all(nets, cfg, record, inputs: str, batch_size: int, device) -> list[tuple[Tensor, np.ndarray]]:
    from medgan.data.datasets import find_records

    key = {"pix2pix": "source", "label2image": "label_map"}.get(cfg.task, "image")
    records = find_records(inputs)
    name = "G_ab" if cfg.task == "cyclegan" else "G"
    out_window = output_record(record, cfg.task)["window"]
    in_window = record["window"] if cfg.task == "cyclegan" else record.get("source_window")
    results = []
    for r in records:
        column = key if r.get(key) else "image"  # a folder's scans, or a CSV's image column, are inputs too
        path, series = r[column], r.get(f"{column}_series")  # one DICOM series of a folder that holds several
        image, affine = _translate(nets[name], path, series, key, cfg, record, in_window, batch_size, device)
        results.append((_physical(image, out_window), affine))
    return results


@torch.no_grad()
def _translate(g, path, series, key, cfg, record, in_window, batch_size, device) -> tuple[Tensor, np.ndarray]:
    """Run an image-to-image generator over one scan (slice by slice for 2D models), sliding a
    window of the training size over larger images."""
    from monai.inferers import sliding_window_inference

    from medgan.data.transforms import LoadScand, reorient_like, to_unit

    data = cfg.data
    loaded = LoadScand([key], data.spacing_mm, data.spatial_dims, data.slice_axis)({key: path, f"{key}_series": series})
    x, affine = loaded[key], np.asarray(loaded[f"{key}_meta"]["affine"])
    # The scan's axes in the order and direction of the training images (as paired training data
    # was brought onto them), exactly: a scan stored LPS reaches a network trained on RAS as RAS.
    directions = np.asarray(record["directions"], dtype=np.float64)
    x, affine = reorient_like(x, affine, directions if x.ndim == 4 else directions[:, record["axes"]])
    if key == "label_map":
        top = int(x.max())
        if top >= g.num_labels:  # LoadScand has refused fractional and negative values already
            raise InputError(f"holds label {top} but this checkpoint was trained on labels 0 to {g.num_labels - 1}; "
                             "is it a label map of the training kind?", path=path)  # fmt: skip
        x = F.one_hot(x[0].long(), g.num_labels).movedim(-1, 0).float()
    else:
        x = to_unit(x, *in_window)
    volume_slices = data.spatial_dims == 2 and x.ndim == 4
    if volume_slices:  # [C, ..., n, ...] -> n slices of [C * slab, a, b]
        n, half = x.shape[1 + data.slice_axis], data.slab_slices // 2
        moved = x.movedim(1 + data.slice_axis, 0)  # [n, C, a, b]
        index = torch.arange(n)[:, None] + torch.arange(-half, half + 1)[None, :]
        x = moved[index.clamp(0, n - 1)].flatten(1, 2)  # [n, slab * C, a, b]
    else:
        x = x[None]
    outputs = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size].to(device)
        y = sliding_window_inference(chunk, data.image_size, batch_size, g, overlap=0.25, mode="gaussian")
        outputs.append(y.float().cpu())
    y = torch.cat(outputs)
    if not volume_slices:
        return y[0], affine
    # Each slice's middle channels, stacked back along the slice axis: [C, i, j, k].
    return torch.stack([_middle(s, record) for s in y]).movedim(0, 1 + data.slice_axis), affine


_SUFFIX = {"nifti": ".nii.gz", "dicom": "", "png": ".png"}  # what _write adds to each output's stem


def _write(item, meta, out_dir, stem, format, window, overwrite) -> str:
    from medgan.io import write_image
    from medgan.io.image import make_image

    image, affine = item
    array = image.numpy().astype(np.float32)
    path = os.path.join(out_dir, stem + _SUFFIX[format])
    if format == "png":
        low, high = window
        plane = array[array.shape[0] // 2]
        if plane.ndim == 3:  # a volume: its middle axial slice
            plane = plane[:, :, plane.shape[2] // 2]
        return write_png(to_uint8(np.rot90(plane), low, high), path, overwrite)
    scan = make_image(array, affine, meta)
    if format == "nifti":
        return write_image(scan, path, overwrite=overwrite)
    if meta["modality"] not in ("CT", "MR"):
        raise OutputError("DICOM output needs the modality CT or MR; the training data recorded none: "
                          "pass --modality CT or MR", path=out_dir)  # fmt: skip
    return write_image(scan, path, to="dicom", modality=meta["modality"], synthetic=True,
                       overwrite=overwrite)  # fmt: skip
