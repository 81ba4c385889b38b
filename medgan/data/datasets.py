"""Training data from a folder or a CSV of NIfTI/DICOM scans: 2D slices or 3D volumes/patches.

    records = find_records("scans/")                       # or "pairs.csv"
    data = ScanDataset(records, spatial_dims=2, image_size=[256, 256], spacing_mm=[1.0, 1.0])
    data[(index, seed)]   # {"image": [C, 256, 256] in [-1, 1], ...}; same (index, seed), same sample

A CSV has a header row; `image` names each scan (a file or a DICOM folder, relative to the
CSV), and optional columns add a class `label` (integer), a paired `source` image (pix2pix)
or a `label_map` (label-map-to-image). Scans are read and resampled once, then cached by
MONAI (`CacheDataset` in memory, `PersistentDataset` on disk). Intensities are windowed to
[-1, 1]; the window is kept in `data.record` so that generated images go back to HU.
Paired images are matched to their `image` by position (see `medgan.data.transforms`).

Unreadable files found by searching a folder are skipped with a warning naming them; a CSV
row naming a missing or unreadable file is an error naming the CSV line.

Randomness is explicit: a sample is addressed by `(index, seed)` and a random crop is drawn
from that seed alone, and `StepBatchSampler` derives every batch from (seed, step), so a
resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Transform
from torch import Tensor
from torch.utils.data import DistributedSampler, Sampler

from medgan.data.transforms import LoadScand, UnreadableScan, spacing_of, to_unit
from medgan.errors import ConfigError, InputError, MedganError
from medgan.io.image import affine_of

__all__ = ["ScanDataset", "StepBatchSampler", "UnpairedDataset", "find_records", "sample_seed", "write_phantom_pairs"]

log = logging.getLogger(__name__)

IMAGE_KEYS = ("image", "source", "label_map")
# Where a record came from, for messages; not part of what is loaded (nor of the disk cache's key).
ORIGIN_KEYS = ("found_in", "csv", "csv_line")
_FOREGROUND_LEVEL = 0.05  # a voxel is tissue above 5% of the window
_SKIPPED_NAMED = 10  # skipped files named one by one in the log; the rest are counted
_FAILED = "medgan_load_error"  # what the in-memory cache holds for a scan that could not be loaded: the error


def find_records(source: str) -> list[dict[str, Any]]:
    """One record per scan: every image under a folder, or the rows of a CSV.

    A folder's records carry `found_in` (the folder), so that files which turn out unreadable
    are skipped; a CSV's carry `csv` and `csv_line`, so that errors name the line.
    """
    if source.lower().endswith(".csv"):
        return _csv_records(source)
    from medgan.io import find_images

    found, problems = find_images(source, skip_invalid=True)
    searched = os.path.isdir(source)
    records = [{"image": f.source, "image_series": f.series.key if f.series else None} for f in found]
    if searched:
        records = [{**r, "found_in": source} for r in records]
    if not records:
        detail = f"; {len(problems)} file(s) unreadable, e.g. {problems[0]}" if problems else ""
        raise InputError(f"no readable NIfTI/DICOM/NRRD/MHA images here{detail}; point data.source elsewhere", source)
    return records


def _csv_records(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"cannot read the CSV ({err})", path=path) from None
    if not rows or "image" not in rows[0]:
        raise InputError("a data CSV needs a header row with an 'image' column and at least one row", path=path)
    folder = os.path.dirname(os.path.abspath(path))
    records = []
    for line, row in enumerate(rows, start=2):
        record: dict[str, Any] = {}
        for key in IMAGE_KEYS:
            if row.get(key):
                record[key] = row[key] if os.path.isabs(row[key]) else os.path.join(folder, row[key])
                if not os.path.exists(record[key]):
                    raise InputError(f"line {line}: {key} {record[key]}: no such file or folder", path=path)
                if row.get(f"{key}_series"):
                    record[f"{key}_series"] = row[f"{key}_series"]
        if "image" not in record:
            raise InputError(f"line {line}: the 'image' column is empty", path=path)
        if row.get("label"):
            try:
                record["label"] = int(row["label"])
            except ValueError:
                raise InputError(f"line {line}: label {row['label']!r} is not an integer class", path=path) from None
            if record["label"] < 0:
                raise InputError(f"line {line}: label {record['label']} is negative; classes are numbered from 0",
                                 path=path)  # fmt: skip
        records.append({**record, "csv": path, "csv_line": line})
    return records


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's random choices (crop position) in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class ScanDataset(torch.utils.data.Dataset):
    """Samples cut from preprocessed scans, addressed by `(index, seed)`."""

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        spatial_dims: int = 2,  # 2: slices (or whole 2D images); 3: volumes or patches
        image_size: Sequence[int] = (64, 64),  # voxels per axis of a sample
        spacing_mm: Sequence[float] | None = None,  # resample to this (in-plane for 2D); None keeps the scan's
        slice_axis: int = 2,  # 2D from 3D: the axis slices are cut across
        slab_slices: int = 1,  # 2D: neighbouring slices as channels (odd)
        slice_range: tuple[float, float] = (0.0, 1.0),  # 2D: fraction of each volume along the slice axis
        min_foreground_fraction: float = 0.05,  # 2D: skip slices with less tissue than this
        window: tuple[float, float] | None = None,  # physical units -> [-1, 1]; None: percentiles of the data
        window_percentiles: tuple[float, float] = (0.5, 99.5),
        source_window: tuple[float, float] | None = None,  # for paired `source` images; None: percentiles
        crop: str = "random",  # "random" or "center" when a slice/volume is larger than image_size
        cache: str = "memory",  # "memory", "disk" or "none"
        cache_dir: str | None = None,
    ):
        self.spatial_dims, self.image_size = spatial_dims, list(image_size)
        self.slice_axis, self.slab_slices, self.crop = slice_axis, slab_slices, crop
        keys = [k for k in IMAGE_KEYS if any(k in r for r in records)]
        loader = LoadScand(keys, spacing_mm, spatial_dims, slice_axis)
        self.scans = _cached(records, loader, cache, cache_dir)
        self.kept = _readable(self.scans, records)  # positions in self.scans of the scans that could be read
        records = [records[i] for i in self.kept]
        self.windows = {"image": window or self._percentiles("image", window_percentiles)}
        if "source" in keys:
            self.windows["source"] = source_window or self._percentiles("source", window_percentiles)
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
            index += [(i, s) for s in range(first, min(last, n)) if tissue[s] >= min_fraction]
        return index

    def _describe(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """What synthesis needs to write outputs like the training data (spacing, HU, orientation)."""
        first, meta = self._scan(0)["image"], self._scan(0)["image_meta"]
        affine = np.asarray(meta["affine"])
        dims = first.ndim - 1
        spacing = spacing_of(affine, dims)
        directions = (affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)).tolist()
        others = [i for i in range(1, self.num_scans) if not _same_directions(self._scan(i)["image_meta"], directions)]
        if others:  # drawn scans get one orientation: say whose
            log.warning("the training scans differ in orientation (%d of %d differ from %s); scans drawn from this "
                        "model will carry that first scan's orientation and spacing", len(others), self.num_scans,
                        records[0].get("image", "the first scan"))  # fmt: skip
        axes = [a for a in range(dims) if not (dims == 3 and self.spatial_dims == 2 and a == self.slice_axis)]
        labels = [int(r["label"]) for r in records if "label" in r]
        label_maps = [int(self._scan(i)["label_map"].max()) for i in range(self.num_scans) if "label_map" in records[i]]
        kinds = [_kind(self._scan(i)["image_meta"]) for i in range(self.num_scans)]
        modality, units = _common(kinds)
        num_classes = max(labels) + 1 if labels else 0
        per_class = [sorted({k for k, r in zip(kinds, records, strict=True) if r.get("label") == c})
                     for c in range(num_classes)]  # fmt: skip
        empty = [c for c in range(num_classes) if not per_class[c]]
        if empty:  # labels 1 and 2 make classes 0..2: class 0 would be drawn without ever being seen
            log.warning("classes are numbered from 0, and class%s %s ha%s no scans; the generator will learn "
                        "nothing for %s", "es" if len(empty) > 1 else "", ", ".join(map(str, empty)),
                        "ve" if len(empty) > 1 else "s", "them" if len(empty) > 1 else "it")  # fmt: skip
        return {
            "modality": modality,  # "" when the scans mix modalities (see "modalities")
            "units": units,
            "modalities": sorted({m for m, _ in kinds}),
            # Per class (conditional): the (modality, units) pairs of its scans; a class may mix several.
            "class_kinds": [[list(k) for k in kinds_of] for kinds_of in per_class] if labels else None,
            "window": list(self.windows["image"]),
            "source_window": list(self.windows["source"]) if "source" in self.windows else None,
            "spatial_dims": self.spatial_dims,
            "slice_axis": self.slice_axis,
            "spacing_mm": [spacing[a] for a in axes],
            "slice_spacing_mm": spacing[self.slice_axis] if len(axes) < dims else None,
            "directions": [[row[a] for a in range(3)] for row in directions],  # columns: array axes (RAS)
            "axes": axes,
            "image_channels": first.shape[0],  # of the scans themselves
            "channels": first.shape[0] * self.slab_slices,  # of a sample (a slab stacks slices as channels)
            "num_classes": num_classes,
            "num_labels": max(label_maps) + 1 if label_maps else 0,
            "samples": len(self.index),
        }

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, seed = key
        scan_index, slice_index = self.index[index]
        scan = self._scan(scan_index)
        rng = np.random.default_rng(seed)
        arrays = {k: self._cut(scan[k], slice_index) for k in IMAGE_KEYS if k in scan and scan[k] is not None}
        offsets = self._offsets(arrays["image"].shape[1:], rng)
        out: dict[str, Tensor] = {}
        for key_name, array in arrays.items():
            fill = 0 if key_name == "label_map" else None
            if key_name != "label_map":
                array = to_unit(array, *self.windows[key_name])
            out[key_name] = _crop_or_pad(array, self.image_size, offsets, -1.0 if fill is None else fill)
        if "label" in scan:
            out["label"] = torch.tensor(scan["label"], dtype=torch.long)
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

    def _offsets(self, shape: Sequence[int], rng: np.random.Generator) -> list[int]:
        offsets = []
        for have, want in zip(shape, self.image_size, strict=True):
            extra = have - want
            if extra <= 0:
                offsets.append(0)
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


def _same_directions(meta: dict[str, Any], directions: list[list[float]], tolerance: float = 1e-3) -> bool:
    affine = np.asarray(meta["affine"], dtype=np.float64)[:3, :3]
    return bool(np.allclose(affine / np.linalg.norm(affine, axis=0), directions, atol=tolerance))


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
    """CycleGAN's two domains: sample i of A with a seed-chosen sample of B."""

    def __init__(self, a: ScanDataset, b: ScanDataset):
        self.a, self.b = a, b
        self.record = {**a.record, "domain_b": b.record}

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, seed = key
        partner = int(np.random.default_rng(seed).integers(len(self.b)))
        return {"a": self.a[(index % len(self.a), seed)]["image"], "b": self.b[(partner, seed ^ 0x5BD1E995)]["image"]}


class StepBatchSampler(Sampler):
    """Batches for steps `start_step`, `start_step + 1`, ... of an endless shuffled stream.

    The stream is this rank's share of each epoch (`DistributedSampler`: the same seeded
    permutation on every rank, cut into disjoint shards), epoch after epoch; a step's batch
    depends only on (seed, step), which is what makes resuming exact. Each item is
    `(index, sample_seed)`.
    """

    def __init__(self, dataset_size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_step: int = 0):  # fmt: skip
        if dataset_size < world_size:
            raise ConfigError(f"{dataset_size} training samples cannot be shared among {world_size} processes")
        self.sampler = DistributedSampler(
            range(dataset_size), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batch_size, self.seed, self.start_step = batch_size, seed, start_step
        self._epoch, self._order = -1, []

    def _epoch_order(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._order = epoch, list(self.sampler)
        return self._order

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = len(self.sampler)
        step = self.start_step
        while True:
            batch = []
            for position in range(step * self.batch_size, (step + 1) * self.batch_size):
                epoch, offset = divmod(position, per_epoch)
                index = self._epoch_order(epoch)[offset]
                batch.append((index, sample_seed(self.seed, epoch, index)))
            yield batch
            step += 1


def write_phantom_pairs(
    folder: str, count: int = 4, spatial_dims: int = 2, shape: Sequence[int] | None = None,
    spacing_mm: Sequence[float] | None = None, kind: str = "ct_body", seed: int = 0,
) -> str:  # fmt: skip
    """Write `count` phantoms with their tissue label maps and a low-dose-like noisy copy as
    paired data, plus `pairs.csv` (columns image, source, label_map); returns the CSV path.

    Material for pix2pix and label-map-to-image runs when no paired scans are at hand.
    """
    from medgan.data.phantoms import PHANTOMS, phantom_labels
    from medgan.io import write_image
    from medgan.io.image import make_image

    os.makedirs(folder, exist_ok=True)
    rows = []
    for n in range(count):
        kwargs = {"spatial_dims": spatial_dims, "seed": seed + n, "shape": shape, "spacing_mm": spacing_mm}
        clean = PHANTOMS.build(kind, **kwargs)
        noisy = PHANTOMS.build(kind, **kwargs, noise_sd=4 * clean.meta["phantom_params"]["noise_sd"] + 20)
        labels, _ = phantom_labels(clean.meta["phantom_params"])
        label_map = make_image(labels[np.newaxis].astype(np.int16), affine_of(clean), {"modality": ""})
        names = {"image": f"image_{n:03d}.nii.gz", "source": f"noisy_{n:03d}.nii.gz",
                 "label_map": f"labels_{n:03d}.nii.gz"}  # fmt: skip
        for key, image in (("image", clean), ("source", noisy), ("label_map", label_map)):
            write_image(image, os.path.join(folder, names[key]), overwrite=True)
        rows.append(names)
    path = os.path.join(folder, "pairs.csv")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "source", "label_map"])
        writer.writeheader()
        writer.writerows(rows)
    return path
