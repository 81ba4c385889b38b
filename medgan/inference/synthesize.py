"""Synthetic scans from a training checkpoint, written like the training data (spacing, HU).

    from medgan.inference import synthesize
    paths = synthesize("runs/ct-00000/checkpoints/step_0010000.pt", count=8, out_dir="synth/", seed=1)

Checkpoints of tasks that draw from noise (unconditional, conditional) draw `count` scans;
checkpoints of tasks that translate (pix2pix, cyclegan A->B, label2image, ...) translate the
scans under `inputs`, whole, with the task's declared inputs. The generator's EMA weights are
used. Intensities go back through the window recorded at training time to physical units (HU
for CT), the voxel size is the training spacing, and every output is marked synthetic (DICOM
SyntheticData YES). The same checkpoint, seed and batch size give the same scans.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medgan.errors import ConfigError, InputError, OutputError
from medgan.inference.load import Generators, load_generators
from medgan.inference.whole_scan import apply_to_scan
from medgan.inference.write import FORMATS, SUFFIX, check_outputs, drawn_affine, output_kind, write_output

__all__ = ["draw", "load_scan_inputs", "resolve_device", "synthesize", "translate"]

_OVERLAP = 0.25  # of a window with its neighbour, when a translated scan is larger than the training size


def synthesize(
    checkpoint: str,
    count: int = 8,  # scans to draw (checkpoints that draw from noise)
    out_dir: str = "synthetic",
    format: str = "nifti",  # nifti, dicom (a series folder per scan, SyntheticData YES) or png (preview)
    seed: int = 0,  # same seed, same scans
    batch_size: int = 8,
    class_index: int | None = None,  # conditional checkpoints: this class for all; None cycles the classes
    inputs: str | None = None,  # translating checkpoints: a scan, a folder of scans, or a CSV
    modality: str | None = None,  # for DICOM output when the training data recorded none (CT or MR)
    device: str = "auto",
    overwrite: bool = False,
    whole_slab: bool = False,  # 2.5D checkpoints: write each sample's whole slab as a thin volume
    truncation_psi: float | None = None,  # StyleGAN: < 1 pulls each style toward the mean; None: the checkpoint's
) -> list[str]:
    """Generate scans and write them under `out_dir`; returns the paths written."""
    if format not in FORMATS:
        raise ConfigError(f"unknown output format {format!r} (choose {', '.join(FORMATS)})")
    if count < 1 or batch_size < 1:
        raise ConfigError("the scan count and the batch size must be at least 1")
    dev = resolve_device(device)
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise OutputError("is a file, not a folder; choose another --out", path=out_dir)
    try:
        model = load_generators(checkpoint, dev)
        made = model.made
        used_psi = 1.0
        if model.task.translates is None:
            if inputs is not None:
                raise ConfigError("this checkpoint draws scans from noise; drop --input")
            classes = getattr(model.output, "num_classes", 0) or 0
            labels = [class_index if class_index is not None else i % classes for i in range(count)] if classes \
                else [None] * count  # fmt: skip
            kinds = [output_kind(made, label, modality, format, checkpoint) for label in labels]
            used_psi = truncation_used(model.output, truncation_psi)
            images = draw(
                model.output, model.record, count, seed, batch_size, class_index, dev, whole_slab, truncation_psi
            )
        else:
            if whole_slab:
                raise ConfigError("--whole-slab is for checkpoints that draw slabs from noise; a translation "
                                  "already writes every slice of the scan")  # fmt: skip
            if truncation_psi is not None:
                raise ConfigError(f"--truncation is for checkpoints that draw from noise, not a {model.cfg.task} one")
            if inputs is None:
                raise ConfigError(f"a {model.cfg.task} checkpoint translates scans: pass --input FILE_OR_FOLDER")
            kinds = [output_kind(made, None, modality, format, checkpoint)]
            images = [translate(model, scan, batch_size, dev) for scan in load_scan_inputs(model, inputs)]
    except torch.cuda.OutOfMemoryError:
        raise ConfigError("out of GPU memory: lower --batch, or run with device cpu") from None
    names = [os.path.join(out_dir, f"synthetic_{i:04d}") for i in range(len(images))]
    check_outputs([name + SUFFIX[format] for name in names], out_dir, overwrite)
    paths = []
    for i, ((image, affine), name) in enumerate(zip(images, names, strict=True)):
        kind, units = kinds[min(i, len(kinds) - 1)]
        psi = "" if used_psi == 1.0 else f", truncation {used_psi:g}"
        meta = {"modality": kind, "units": units, "synthetic": True,
                "description": f"medgan synthetic {model.cfg.task} (seed {seed}, sample {i}{psi})"}  # fmt: skip
        paths.append(write_output(image, affine, meta, name, format, made["window"], overwrite))
    return paths


def resolve_device(device: str) -> torch.device:
    """`auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N`; a GPU that is not there is refused."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA GPU is visible here; use --device cpu or auto")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r} (choose auto, cpu, cuda or cuda:N)")
    return torch.device("cpu" if device == "cpu" or not torch.cuda.is_available() else device.replace("auto", "cuda"))


@torch.no_grad()
def draw(g: nn.Module, record: dict, count: int, seed: int, batch_size: int, class_index: int | None,
         device: torch.device, whole_slab: bool = False,
         truncation_psi: float | None = None) -> list[tuple[Tensor, np.ndarray]]:  # fmt: skip
    """`count` scans drawn from noise by a latent generator (classes in turn, or `class_index` for all), each
    in physical units with its affine; the same seed and batch size give the same scans. `truncation_psi` < 1
    (generators with a mapping network) pulls every style toward the mean style, or its class's; None: the
    generator's own (its `truncation_psi` option, 1 where it has none)."""
    from medgan.data.transforms import from_unit

    classes = getattr(g, "num_classes", 0) or 0
    slab = record["channels"] // record["image_channels"]
    if whole_slab and (slab == 1 or len(record["axes"]) != 2):
        raise ConfigError("--whole-slab needs a 2.5D checkpoint (trained with data.slab_slices > 1); "
                          "this one makes single slices or volumes")  # fmt: skip
    pick = _slab if whole_slab else _middle
    extra = _truncation(g, truncation_psi)
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
            images = g(zs, ls if classes else None, **extra).float().cpu()
            for image, label in zip(images, ls.tolist(), strict=True):
                picked = pick(image, record)
                out.append((picked, drawn_affine(record, picked.shape[1:], label if classes else None)))
    return [(from_unit(image, *record["window"]), affine) for image, affine in out]


def truncation_used(g: nn.Module, psi: float | None) -> float:
    """The psi that drawing from `g` with `psi` applies: `psi`, or the generator's own when None."""
    return float(getattr(g, "truncation_psi", 1.0)) if psi is None else float(psi)


def _truncation(g: nn.Module, psi: float | None) -> dict[str, float]:
    """The generator's keyword for `psi` ({} for None: its own default); a value out of [0, 1], or a value
    below 1 for a generator without a mapping network, is a ConfigError."""
    if psi is None:
        return {}
    if not 0.0 <= psi <= 1.0:
        raise ConfigError(f"--truncation must be in [0, 1] (1: none), not {psi:g}")
    if not hasattr(g, "truncation_centre"):
        if psi == 1.0:
            return {}
        raise ConfigError(f"--truncation needs a generator with a mapping network (stylegan); this checkpoint's "
                          f"is {type(g).__name__}")  # fmt: skip
    return {"truncation_psi": float(psi)}


def _middle(image: Tensor, record: dict) -> Tensor:
    """The middle slice of a 2.5D slab (all of that slice's channels); the image itself otherwise."""
    per_slice = record["image_channels"]
    middle = (record["channels"] // per_slice) // 2
    return image[middle * per_slice : (middle + 1) * per_slice]


def _slab(image: Tensor, record: dict) -> Tensor:
    """A 2.5D sample's slices stacked along a third array axis, the slice axis of `drawn_affine`: [C, a, b, slab]."""
    per_slice = record["image_channels"]
    return torch.stack(image.split(per_slice), dim=-1)


def load_scan_inputs(model: Generators, source: str) -> list[dict[str, Any]]:
    """The scans a translating checkpoint reads, from a scan, a folder or a CSV: per scan, each input the task
    translates (`[C, *spatial]` in physical units or labels, on the first input's grid, turned to the training
    data's axis order) with its path and the grid's affine."""
    from medgan.data.records import find_records
    from medgan.data.transforms import LoadScand, resample, target_spacing
    from medgan.io.geometry import reorient_like, respaced_affine, spacing_mm

    task, data, record = model.task, model.cfg.data, model.record
    wanted = [i for i in task.inputs if i.key in task.translates]
    labels = [i.key for i in wanted if i.is_labels]
    scans = []
    for r in find_records(source, task.inputs):
        # A folder's scans, or a CSV's image column, are the first input when the CSV does not name it.
        paths = {i.key: r.get(i.key) or (r["image"] if n == 0 else None) for n, i in enumerate(wanted)}
        series = {f"{i.key}_series": r.get(f"{i.key}_series") or (r.get("image_series") if n == 0 else None)
                  for n, i in enumerate(wanted)}  # fmt: skip
        missing = [key for key, path in paths.items() if path is None]
        if missing:
            raise InputError(f"task {task.name} translates {' and '.join(paths)}; give a CSV with a "
                             f"{missing[0]!r} column for {r['image']}", path=source)  # fmt: skip
        read = LoadScand(list(paths), None, data.spatial_dims, data.slice_axis, label_keys=labels)
        loaded = read({**paths, **series})
        # The scan's axes in the order and direction of the training images, exactly (a scan stored LPS reaches
        # a network trained on RAS as RAS, as paired training data was brought onto them), then the training
        # voxel size, whose slice axis is the training one whatever order the scan was stored in.
        directions = np.asarray(record["directions"], dtype=np.float64)
        arrays = {}
        for key in paths:
            x, affine = loaded[key], np.asarray(loaded[f"{key}_meta"]["affine"])
            x, affine = reorient_like(x, affine, directions if x.ndim == 4 else directions[:, record["axes"]])
            dims = x.ndim - 1
            spacing = spacing_mm(affine, dims)
            target = target_spacing(spacing, data.spacing_mm, data.spatial_dims, data.slice_axis)
            arrays[key] = resample(x, spacing, target, labels=key in labels)
            affine = respaced_affine(affine, target)
        scans.append({"arrays": arrays, "affine": affine, "paths": paths})
    return scans


def translate(model: Generators, scan: dict[str, Any], batch_size: int, device: torch.device,
              overlap: float = _OVERLAP) -> tuple[Tensor, np.ndarray]:  # fmt: skip
    """Run a translating checkpoint's generator over one loaded scan (`load_scan_inputs`); returns the output in
    physical units and its affine."""
    from medgan.data.transforms import from_unit, to_unit

    task, data, g = model.task, model.cfg.data, model.output
    kinds = {i.key: i.kind for i in task.inputs}
    inputs = {}
    for key, x in scan["arrays"].items():
        if kinds[key] == "labels":
            top = int(x.max())
            if top >= g.num_labels:  # LoadScand has refused fractional and negative values already
                raise InputError(f"holds label {top} but this checkpoint was trained on labels 0 to "
                                 f"{g.num_labels - 1}; is it a label map of the training kind?",
                                 path=scan["paths"][key])  # fmt: skip
            inputs[key] = x
        elif kinds[key] == "mask":
            inputs[key] = (x > 0).float()
        else:
            inputs[key] = to_unit(x, *task.input_window(model.record, key))

    def predict(windows: dict[str, Tensor]) -> Tensor:
        return g(task.generator_input(windows, g))

    y = apply_to_scan(predict, inputs, data.spatial_dims, data.image_size, data.slice_axis, data.slab_slices,
                      overlap=overlap, batch_size=batch_size, device=device)  # fmt: skip
    y = task.finish(y[None], {key: value[None] for key, value in inputs.items()})[0]
    return from_unit(y, *model.made["window"]), scan["affine"]
