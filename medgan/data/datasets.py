"""Training data from scan records (`medgan.data.records`): 2D slices or 3D volumes/patches.

    records = find_records("pairs.csv", task.inputs)
    data = ScanDataset(records, task.inputs, spatial_dims=2, image_size=[256, 256], spacing_mm=[1.0, 1.0])
    data[(index, seed)]   # {"image": [C, 256, 256] in [-1, 1], "source": ..., ...}; same (index, seed), same sample

What a sample holds is what the task declares (`medgan.tasks.Input`): images windowed to
[-1, 1], label maps and masks as integers, classes as numbers. Scans are read and resampled
once, then cached by MONAI (`CacheDataset` in memory, `PersistentDataset` on disk). The window is
kept in `data.record` so that generated images go back to HU. Every other input of a record is
brought onto its `image`'s voxel grid (see `medgan.data.transforms`).

Unreadable files found by searching a folder are skipped with a warning naming them; a CSV
row naming a missing or unreadable file is an error naming the CSV line.

Randomness is explicit: a sample is addressed by `(index, seed)` and a random crop is drawn
from that seed alone (`medgan.data.sampling` derives every batch from (seed, step)).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Transform
from torch import Tensor

from medgan.data.records import DEFAULT_INPUTS, ORIGIN_KEYS, Input
from medgan.data.transforms import LoadScand, UnreadableScan, to_unit
from medgan.errors import ConfigError, InputError, MedganError
from medgan.io.geometry import STEP_TOLERANCE_VOXELS, axis_directions, spacing_mm

__all__ = ["ScanDataset", "UnpairedDataset"]

log = logging.getLogger(__name__)

_FOREGROUND_LEVEL = 0.05  # a voxel is tissue above 5% of the window
_SKIPPED_NAMED = 10  # skipped files named one by one in the log; the rest are counted
_FAILED = "medgan_load_error"  # what the in-memory cache holds for a scan that could not be loaded: the error


class ScanDataset(torch.utils.data.Dataset):
    """Samples cut from preprocessed scans, addressed by `(index, seed)`."""

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        inputs: Sequence[Input] = DEFAULT_INPUTS,  # what a sample holds: a task's inputs (default image, class)
        spatial_dims: int = 2,  # 2: slices (or whole 2D images); 3: volumes or patches
        image_size: Sequence[int] = (64, 64),  # voxels per axis of a sample
        spacing_mm: Sequence[float] | None = None,  # resample to this (in-plane for 2D); None keeps the scan's
        slice_axis: int = 2,  # 2D from 3D: the axis slices are cut across
        slab_slices: int = 1,  # 2D: neighbouring slices as channels (odd)
        slice_range: tuple[float, float] = (0.0, 1.0),  # 2D: fraction of each volume along the slice axis
        min_foreground_fraction: float = 0.05,  # 2D: skip slices with less tissue than this
        window: tuple[float, float] | None = None,  # physical units -> [-1, 1]; None: percentiles of the data
        window_percentiles: tuple[float, float] = (0.5, 99.5),
        source_window: tuple[float, float] | None = None,  # for every other image input; None: percentiles
        crop: str = "random",  # "random", "center" or "mask" (around the mask input's region, jittered)
        cache: str = "memory",  # "memory", "disk" or "none"
        cache_dir: str | None = None,
        physical: Sequence[str] = (),  # image keys returned in physical units, unwindowed (degraded on the device)
    ):
        self.spatial_dims, self.image_size = spatial_dims, list(image_size)
        self.slice_axis, self.slab_slices, self.crop = slice_axis, slab_slices, crop
        self.inputs = {i.key: i for i in inputs if i.is_file and (i.key == "image" or any(i.key in r for r in records))}
        self.classes = [i.key for i in inputs if not i.is_file]
        self.physical = frozenset(physical)
        labels = [k for k, i in self.inputs.items() if i.is_labels]
        self.region_key = next((k for k, i in self.inputs.items() if i.kind == "mask"), None)
        if crop == "mask" and self.region_key is None:
            raise ConfigError("data.crop is mask, but the records name no mask: give a CSV with the mask column, "
                              "or crop random or center")  # fmt: skip
        loader = LoadScand(list(self.inputs), spacing_mm, spatial_dims, slice_axis, label_keys=labels)
        self.scans = _cached(records, loader, cache, cache_dir)
        self.kept = _readable(self.scans, records)  # positions in self.scans of the scans that could be read
        records = [records[i] for i in self.kept]
        self.windows = {"image": window or self._percentiles("image", window_percentiles)}
        for key, item in self.inputs.items():  # the target has data.window; every other image input source_window
            if key != "image" and not item.is_labels:
                self.windows[key] = source_window or self._percentiles(key, window_percentiles)
        self.index = self._build_index(slice_range, min_foreground_fraction)
        if not self.index:
            raise InputError(
                f"no usable samples: every slice has under {min_foreground_fraction:.0%} tissue in the window "
                f"{list(self.windows['image'])}; lower data.min_foreground_fraction or change data.window",
                path=str(records[0]["image"]),
            )
        self.record = self._describe(records)

    def _scan(self, i: int) -> dict[str, Any]:
        try:
            return self.scans[self.kept[i]]
        except Exception as err:  # MONAI wraps a transform's error: show the medgan one, one line
            cause = _medgan_cause(err)
            if cause is None:
                raise
            raise cause from None

    @property
    def num_scans(self) -> int:
        return len(self.kept)

    def _percentiles(self, key: str, percentiles: tuple[float, float]) -> tuple[float, float]:
        voxels = []
        for i in range(self.num_scans):
            values = self._scan(i)[key].flatten()
            stride = max(1, values.numel() // 200_000)  # a fixed subsample per scan keeps this cheap
            voxels.append(values[::stride].double().numpy())
        low, high = np.percentile(np.concatenate(voxels), percentiles)
        return (float(low), float(high) if high > low else float(low) + 1.0)

    def _build_index(self, slice_range: tuple[float, float], min_fraction: float) -> list[tuple[int, int]]:
        """(scan, slice) pairs; slice -1 means the whole image (3D training, or a 2D scan)."""
        index = []
        low, high = self.windows["image"]
        for i in range(self.num_scans):
            image = self._scan(i)["image"]
            if self.spatial_dims == 3 or image.ndim == 3:
                index.append((i, -1))
                continue
            n = image.shape[1 + self.slice_axis]
            first, last = int(np.floor(slice_range[0] * n)), int(np.ceil(slice_range[1] * n))
            level = low + _FOREGROUND_LEVEL * (high - low)
            tissue = (image > level).float().movedim(1 + self.slice_axis, 0).flatten(1).mean(1)  # per slice
            keep = tissue >= min_fraction
            if self.crop == "mask":  # slices that cut the region, whatever else they hold
                keep = (self._scan(i)[self.region_key] > 0).movedim(1 + self.slice_axis, 0).flatten(1).any(1)
            index += [(i, s) for s in range(first, min(last, n)) if keep[s]]
        return index

    def _describe(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """What synthesis needs to write outputs like the training data (spacing, HU, orientation)."""
        first = self._scan(0)["image"]
        dims = first.ndim - 1
        axes = [a for a in range(dims) if not (dims == 3 and self.spatial_dims == 2 and a == self.slice_axis)]
        grid = self._grid(0, axes)
        others = [i for i in range(1, self.num_scans)
                  if not _same_directions(self._scan(i)["image_meta"], grid["directions"])]  # fmt: skip
        if others:  # drawn scans get one orientation: say whose
            log.warning("the training scans differ in orientation (%d of %d differ from %s); scans drawn from this "
                        "model will carry that first scan's orientation and spacing", len(others), self.num_scans,
                        records[0].get("image", "the first scan"))  # fmt: skip
        class_key = self.classes[0] if self.classes else None
        labels = [int(r[class_key]) for r in records if class_key in r]
        label_maps = [int(self._scan(i)[key].max()) for i in range(self.num_scans)
                      for key, item in self.inputs.items() if item.kind == "labels" and key in records[i]]  # fmt: skip
        kinds = [_kind(self._scan(i)["image_meta"]) for i in range(self.num_scans)]
        modality, units = _common(kinds)
        num_classes = max(labels) + 1 if labels else 0
        members = [[i for i, r in enumerate(records) if r.get(class_key) == c] for c in range(num_classes)]
        empty = [c for c in range(num_classes) if not members[c]]
        if empty:  # labels 1 and 2 make classes 0..2: class 0 would be drawn without ever being seen
            log.warning("classes are numbered from 0, and class%s %s ha%s no scans; the generator will learn "
                        "nothing for %s", "es" if len(empty) > 1 else "", ", ".join(map(str, empty)),
                        "ve" if len(empty) > 1 else "s", "them" if len(empty) > 1 else "it")  # fmt: skip
        sources = [k for k in self.windows if k != "image"]
        return {
            "modality": modality,  # "" when the scans mix modalities (see "modalities")
            "units": units,
            "modalities": sorted({m for m, _ in kinds}),
            # Per class (conditional): the (modality, units) pairs of its scans (a class may mix several), and
            # the voxel grid of its first scan, which scans drawn for that class take.
            "class_kinds": [[list(k) for k in sorted({kinds[i] for i in m})] for m in members] if labels else None,
            "class_grids": [self._grid(m[0], axes) if m else None for m in members] if labels else None,
            "window": list(self.windows["image"]),
            "source_window": list(self.windows[sources[0]]) if sources else None,
            "spatial_dims": self.spatial_dims,
            "slice_axis": self.slice_axis,
            **grid,
            "axes": axes,
            "image_channels": first.shape[0],  # of the scans themselves
            "channels": first.shape[0] * self.slab_slices,  # of a sample (a slab stacks slices as channels)
            "num_classes": num_classes,
            "num_labels": max(label_maps) + 1 if label_maps else 0,
            "samples": len(self.index),
        }

    def _grid(self, scan: int, axes: list[int]) -> dict[str, Any]:
        """A scan's voxel size along the sample's axes, its slice spacing (2D from 3D) and axis directions (RAS)."""
        affine = np.asarray(self._scan(scan)["image_meta"]["affine"])
        dims = self._scan(scan)["image"].ndim - 1
        spacing = spacing_mm(affine, dims)
        directions = axis_directions(affine)
        return {
            "spacing_mm": [spacing[a] for a in axes],
            "slice_spacing_mm": spacing[self.slice_axis] if len(axes) < dims else None,
            "directions": directions.tolist(),  # columns: array axes (RAS)
        }

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, seed = key
        scan_index, slice_index = self.index[index]
        scan = self._scan(scan_index)
        rng = np.random.default_rng(seed)
        arrays = {k: self._cut(scan[k], slice_index) for k in self.inputs if scan.get(k) is not None}
        region = arrays.get(self.region_key) if self.crop == "mask" else None
        offsets = self._offsets(arrays["image"].shape[1:], rng, region)
        out: dict[str, Tensor] = {}
        for key_name, array in arrays.items():
            kind, fill = self.inputs[key_name].kind, 0.0
            if kind == "image" and key_name in self.physical:  # padded with the window's low end, in its units
                fill = self.windows[key_name][0]
            elif kind == "image":
                array, fill = to_unit(array, *self.windows[key_name]), -1.0
            elif kind == "mask":  # any non-zero label is the region
                array = (array > 0).to(torch.uint8)
            out[key_name] = _crop_or_pad(array, self.image_size, offsets, fill)
        for key_name in self.classes:
            if key_name in scan:
                out[key_name] = torch.tensor(scan[key_name], dtype=torch.long)
        return out

    def _cut(self, volume: Tensor, slice_index: int) -> Tensor:
        """A 2D sample from a 3D scan: the slice (and its slab neighbours, edge-clamped) as channels."""
        if slice_index < 0:
            return volume
        n = volume.shape[1 + self.slice_axis]
        half = self.slab_slices // 2
        picks = [min(max(slice_index + d, 0), n - 1) for d in range(-half, half + 1)]
        slab = volume.index_select(1 + self.slice_axis, torch.tensor(picks))  # [C, ..., slab, ...]
        return slab.movedim(1 + self.slice_axis, 1).flatten(0, 1)  # [C * slab, a, b]

    def _offsets(self, shape: Sequence[int], rng: np.random.Generator, region: Tensor | None = None) -> list[int]:
        """Where the sample starts along each axis: random, centred, or (crop "mask") centred on the region's
        bounding box give or take a quarter of the sample, keeping the whole region inside when it fits."""
        box = None
        if region is not None and bool((region > 0).any()):
            where = (region > 0).any(0).nonzero()  # voxel indices of the region (any channel)
            box = (where.min(0).values.tolist(), where.max(0).values.tolist())
        offsets = []
        for axis, (have, want) in enumerate(zip(shape, self.image_size, strict=True)):
            extra = have - want
            if extra <= 0:
                offsets.append(0)
            elif box is not None:
                low, high = box[0][axis], box[1][axis]
                jitter = int(rng.integers(-(want // 4), want // 4 + 1))
                start = round((low + high - (want - 1)) / 2) + jitter
                if high - low < want:  # the region fits: keep all of it
                    start = min(max(start, high - want + 1), low)
                offsets.append(int(min(max(start, 0), extra)))
            else:
                offsets.append(int(rng.integers(0, extra + 1)) if self.crop == "random" else extra // 2)
        return offsets


def _crop_or_pad(array: Tensor, size: Sequence[int], offsets: Sequence[int], fill: float) -> Tensor:
    """Cut `size` starting at `offsets` where the array is larger; pad evenly with `fill` where smaller."""
    for axis, (want, start) in enumerate(zip(size, offsets, strict=True)):
        have = array.shape[1 + axis]
        if have > want:
            array = array.narrow(1 + axis, start, want)
        elif have < want:
            before = (want - have) // 2
            pad = [0, 0] * (array.ndim - 1)
            pad[2 * (array.ndim - 2 - axis)] = before  # F.pad lists the last axis first
            pad[2 * (array.ndim - 2 - axis) + 1] = want - have - before
            array = torch.nn.functional.pad(array, pad, value=fill)
    return array.contiguous()


def _same_directions(meta: dict[str, Any], directions: list[list[float]]) -> bool:
    """Whether a scan's axes run along `directions` (to the grid tolerance of `medgan.io.geometry`)."""
    own = axis_directions(np.asarray(meta["affine"], dtype=np.float64))
    return bool(np.allclose(own, directions, atol=STEP_TOLERANCE_VOXELS))


def _kind(meta: dict[str, Any]) -> tuple[str, str]:
    """(modality, units) of a scan; CT is in HU unless its file says otherwise."""
    modality = str(meta.get("modality") or "").upper()
    return modality, str(meta.get("units") or ("HU" if modality == "CT" else ""))


def _common(kinds: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """The (modality, units) shared by all `kinds`; ("", "") when they differ."""
    unique = set(kinds)
    return unique.pop() if len(unique) == 1 else ("", "")


def _medgan_cause(err: BaseException | None) -> MedganError | None:
    """The MedganError behind an exception (MONAI wraps a transform's errors in RuntimeErrors)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, MedganError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


class _Guarded(Transform):
    """`LoadScand` that returns the error of a scan it cannot load instead of raising it, so that
    MONAI's `CacheDataset` caches the others (it would stop at the first error)."""

    def __init__(self, loader: LoadScand):
        self.loader = loader

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.loader(record)
        except MedganError as err:
            return {_FAILED: err}


def _readable(scans, records: Sequence[dict[str, Any]]) -> list[int]:
    """Load every scan once (filling the cache); the positions of those that loaded.

    An unreadable file found by searching a folder is skipped with a warning (an error when none
    is left); any other problem is an error: naming the CSV line for a CSV's row.
    """
    kept, skipped = [], []
    for i, record in enumerate(records):
        try:
            scan = scans[i]
            error = scan.get(_FAILED)
        except Exception as err:
            error = _medgan_cause(err)
            if error is None:
                raise
        if error is None:
            kept.append(i)
        elif record.get("found_in") and isinstance(error, UnreadableScan):
            skipped.append(str(error))
        elif record.get("csv"):
            raise InputError(f"line {record['csv_line']}: {error}", path=record["csv"]) from None
        else:
            raise error from None
    for problem in skipped[:_SKIPPED_NAMED]:
        log.warning("skipped an unreadable scan: %s", problem)
    if len(skipped) > _SKIPPED_NAMED:
        log.warning("skipped %d more unreadable scans", len(skipped) - _SKIPPED_NAMED)
    if not kept:
        raise InputError(f"none of the {len(records)} images found here can be read, e.g. {skipped[0]}",
                         path=records[0]["found_in"])  # fmt: skip
    return kept


def _cached(records, loader: LoadScand, cache: str, cache_dir: str | None):
    """The preprocessed scans, cached by MONAI so decoding happens once."""
    from monai.data import CacheDataset, Dataset, PersistentDataset

    records = [{k: v for k, v in r.items() if k not in ORIGIN_KEYS} for r in records]
    if cache == "memory":
        return CacheDataset(records, transform=_Guarded(loader), cache_rate=1.0, num_workers=0, progress=False,
                            copy_cache=False)  # fmt: skip
    if cache == "disk":
        if not cache_dir:
            raise ConfigError("data.cache is disk but no data.cache_dir was given")
        os.makedirs(cache_dir, exist_ok=True)
        return PersistentDataset(records, transform=loader, cache_dir=cache_dir)
    return Dataset(records, transform=loader)


class UnpairedDataset(torch.utils.data.Dataset):
    """Two unrelated image sets (CycleGAN's domains): sample i of the first with a seed-chosen one of the second,
    their images under `keys` (the task's domain names)."""

    def __init__(self, a: ScanDataset, b: ScanDataset, keys: Sequence[str] = ("a", "b")):
        self.a, self.b, self.keys = a, b, tuple(keys)
        self.record = {**a.record, "domain_b": b.record}

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, seed = key
        partner = int(np.random.default_rng(seed).integers(len(self.b)))
        first, second = self.a[(index % len(self.a), seed)], self.b[(partner, seed ^ 0x5BD1E995)]
        return {self.keys[0]: first["image"], self.keys[1]: second["image"]}
