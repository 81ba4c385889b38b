"""One scan through an enhancing checkpoint, and how the result is described (`medgan.inference.enhance`).

`Enhancer` checks a checkpoint and the options once, then runs scans: the scan's axes turned to the
training data's order and direction exactly, resampled to the training voxel size, windowed as the
task's input was in training, the generator run over the whole scan (`apply_to_scan`), the task's
finishing step, physical units back through the output's recorded window, and the scan's own axis
order restored. `output_meta` describes the result for the writers: modality and units of what the
generator makes, the derivation naming the checkpoint, and for a DICOM source its study, series and
the source instances (slice by slice while the slices are the source's own, else all of them).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

import medgan
from medgan.errors import ConfigError, InputError
from medgan.inference.load import Generators
from medgan.inference.whole_scan import apply_to_scan
from medgan.io.geometry import (
    GridMismatch,
    axis_directions,
    compare_grids,
    full_affine,
    reorient_like,
    respaced_affine,
    spacing_mm,
)
from medgan.io.image import affine_of, meta_of
from medgan.training.precision import native_bf16, warn_if_emulated

__all__ = ["PRECISION_CHOICES", "Enhancer", "output_meta"]

PRECISION_CHOICES = ("auto", "fp32", "bf16")  # auto: bf16 on a GPU that runs it natively, else fp32


class Enhancer:
    """A translating checkpoint's generator and the whole-scan settings, checked once, for any number of scans."""

    def __init__(
        self,
        model: Generators,
        patch: Sequence[int] | None = None,  # window in voxels per axis (one: every axis); None: the training size
        overlap: float = 0.5,  # fraction of a window shared with its neighbour, in [0, 1)
        batch_size: int = 4,  # windows per network call
        device: torch.device = torch.device("cpu"),  # noqa: B008  (an immutable default)
        slice_wise: bool = False,  # a 2D checkpoint may run over a 3D scan slice by slice
        precision: str = "auto",  # auto: bf16 on a GPU that runs it natively, else fp32 (always on the CPU)
    ):
        task, data = model.task, model.cfg.data
        if task.translates is None:
            raise ConfigError(f"is a {task.name} checkpoint, which draws scans from noise; enhance needs one that "
                              "translates a scan (pix2pix, cyclegan): use medgan synthesize for this one",
                              path=model.path)  # fmt: skip
        kinds = {i.key: i.kind for i in task.inputs}
        if len(task.translates) != 1 or kinds[task.translates[0]] != "image":
            what = " and ".join(f"{key} ({kinds[key]})" for key in task.translates)
            raise ConfigError(f"is a {task.name} checkpoint, which translates {what}, not one scan; use medgan "
                              "synthesize --input for it", path=model.path)  # fmt: skip
        if not 0.0 <= overlap < 1.0:
            raise ConfigError(f"--overlap {overlap} must be in [0, 1)")
        if batch_size < 1:
            raise ConfigError("--batch must be at least 1")
        if precision not in PRECISION_CHOICES:
            raise ConfigError(f"unknown precision {precision!r} (choose {', '.join(PRECISION_CHOICES)})")
        if slice_wise and data.spatial_dims == 3:
            raise ConfigError("--slice-wise runs a 2D checkpoint slice by slice; this checkpoint is 3D",
                              path=model.path)  # fmt: skip
        window = [int(v) for v in patch] if patch else list(data.image_size)
        window = window * data.spatial_dims if len(window) == 1 else window  # one size for every axis
        if len(window) != data.spatial_dims or min(window) < 1:
            raise ConfigError(f"--patch needs {data.spatial_dims} positive sizes for this {data.spatial_dims}D "
                              f"checkpoint, got {'x'.join(str(v) for v in window)}")  # fmt: skip
        check = getattr(model.output, "check_input_size", None)
        if patch and check is not None:
            try:
                check(window)
            except ConfigError as err:
                raise ConfigError(f"--patch {'x'.join(str(v) for v in window)}: {err.reason}") from None
        self.model, self.key, self.window = model, task.translates[0], window
        self.overlap, self.batch_size, self.device, self.slice_wise = overlap, batch_size, device, slice_wise
        if precision == "auto":  # fp32 on every CPU: outputs are in physical units, bf16 keeps 3 significant digits
            precision = "bf16" if device.type == "cuda" and native_bf16(device) else "fp32"
        warn_if_emulated(precision, device, "--precision", "use --precision auto or fp32")
        self.precision = precision
        self.step = _checkpoint_step(model.path)

    def settings(self) -> dict[str, Any]:
        """What a report records about how the scans were run."""
        return {"task": self.model.task.name, "step": self.step, "window": self.window, "overlap": self.overlap,
                "batch": self.batch_size, "device": str(self.device), "precision": self.precision,
                "slice_wise": self.slice_wise, "medgan_version": medgan.__version__}  # fmt: skip

    def run(self, image, path: str) -> tuple[Tensor, np.ndarray, bool]:
        """(the enhanced scan `[C, *spatial]` in physical units on the CPU, its RAS affine, whether that is the
        input's own grid) for a MetaTensor read from `path`."""
        from medgan.data.transforms import from_unit, resample, target_spacing, to_unit

        model, data, record, task = self.model, self.model.cfg.data, self.model.record, self.model.task
        dims = image.ndim - 1
        if dims not in (2, 3):
            raise InputError(f"expected a 2D or 3D image, got shape {tuple(image.shape)}", path=path)
        if dims < data.spatial_dims:
            raise InputError("is a 2D image and this checkpoint enhances 3D volumes", path=path)
        if image.shape[0] != record["image_channels"]:
            raise InputError(f"has {image.shape[0]} channels; this checkpoint was trained on "
                             f"{record['image_channels']}", path=path)  # fmt: skip
        source_affine = full_affine(affine_of(image), dims)
        x = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        # The training data's axis order and direction, exactly, then its voxel size.
        directions = np.asarray(record["directions"], dtype=np.float64)
        x, affine = reorient_like(x.detach().float().cpu(), source_affine,
                                  directions if dims == 3 else directions[:, record["axes"]])  # fmt: skip
        by_slice = data.spatial_dims == 2 and dims == 3
        if by_slice and x.shape[1 + data.slice_axis] > 1 and not self.slice_wise:
            raise InputError("is a 3D scan and this checkpoint is a 2D model: pass --slice-wise to enhance it "
                             "slice by slice", path=path)  # fmt: skip
        spacing = spacing_mm(affine, dims)
        target = target_spacing(spacing, data.spacing_mm, data.spatial_dims, data.slice_axis)
        x, affine = resample(x, spacing, target), respaced_affine(affine, target)
        plane = [a for a in range(dims) if not (by_slice and a == data.slice_axis)]
        have = [int(x.shape[1 + a]) for a in plane]
        if any(h < w for h, w in zip(have, self.window, strict=True)):
            where = "in plane " if by_slice else ""
            raise InputError(f"is {'x'.join(map(str, have))} voxels {where}at the checkpoint's voxel size "
                             f"({' x '.join(f'{target[a]:g}' for a in plane)} mm), smaller than the "
                             f"{'x'.join(map(str, self.window))} window; enhance needs at least one whole window "
                             "(try a smaller --patch)", path=path)  # fmt: skip
        g = model.output
        inputs = {self.key: to_unit(x, *task.input_window(record, self.key))}

        def predict(windows: dict[str, Tensor]) -> Tensor:
            return g(task.generator_input(windows, g))

        y = apply_to_scan(predict, inputs, data.spatial_dims, self.window, data.slice_axis, data.slab_slices,
                          overlap=self.overlap, batch_size=self.batch_size, device=self.device,
                          precision=self.precision)  # fmt: skip
        y = task.finish(y[None], {key: value[None] for key, value in inputs.items()})[0]
        y = from_unit(y, *model.made["window"])
        # Back to the scan's own storage order; on its own grid, its own affine exactly.
        y, affine = reorient_like(y, affine, axis_directions(source_affine)[:, :dims])
        try:
            same = compare_grids(y.shape[1:], affine, image.shape[1:], source_affine).is_identity
        except GridMismatch:
            same = False
        return y, (source_affine if same else affine), same

    def derivation(self, target_mm: Sequence[float] | None) -> str:
        """DerivationDescription: the model (task, checkpoint file, step) and how it was applied."""
        step = f", step {self.step}" if self.step is not None else ""
        grid = f", resampled to {' x '.join(f'{v:g}' for v in target_mm)} mm" if target_mm else ""
        return (f"enhanced by medgan {medgan.__version__}: {self.model.task.name} generator of checkpoint "
                f"{os.path.basename(self.model.path)}{step}; {'x'.join(map(str, self.window))} windows, overlap "
                f"{self.overlap:g}, Gaussian blending, {self.precision}{grid}")  # fmt: skip


def output_meta(enhancer: Enhancer, image, kind: tuple[str, str], affine: np.ndarray, shape: Sequence[int],
                same_grid: bool, copy_patient: bool) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """(the output's metadata, the DICOM writer's options) for an enhanced `image`."""
    source = meta_of(image)
    task = enhancer.model.task.name
    target = None if same_grid else spacing_mm(affine, len(shape))
    meta: dict[str, Any] = {"modality": kind[0], "units": kind[1], "synthetic": True,
                            "description": f"medgan enhance ({task})"}  # fmt: skip
    described = str((source.get("dicom") or {}).get("SeriesDescription") or "") if copy_patient else ""
    options = {"series_description": f"ENHANCED {described or f'medgan {task}'}"[:64],
               "derivation_description": enhancer.derivation(target)}  # fmt: skip
    if source.get("format") == "dicom":
        slices = [list(refs) for refs in source.get("source_slices") or []]
        source_affine = full_affine(affine_of(image), image.ndim - 1)
        if not (len(slices) == (shape[2] if len(shape) == 3 else 1) and _same_planes(affine, source_affine)):
            slices = [list(dict.fromkeys(tuple(ref) for refs in slices for ref in refs))]  # every source, each slice
        meta.update(dicom=dict(source.get("dicom") or {}), patient=dict(source.get("patient") or {}),
                    series_uid=source.get("series_uid"), source_slices=slices)  # fmt: skip
    return meta, options


def _same_planes(affine: np.ndarray, source_affine: np.ndarray, tolerance_mm: float = 1e-3) -> bool:
    """Whether slice k of both grids is the same plane: the same slice step, and origins apart only in plane."""
    step, source_step = affine[:3, 2], source_affine[:3, 2]
    normal = source_step / max(np.linalg.norm(source_step), 1e-12)
    apart = float(np.dot(affine[:3, 3] - source_affine[:3, 3], normal))
    return bool(np.allclose(step, source_step, atol=tolerance_mm) and abs(apart) <= tolerance_mm)


def _checkpoint_step(path: str) -> int | None:
    """The training step a checkpoint was saved at (memory-mapped, so the weights are not read again)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError):
        return None
