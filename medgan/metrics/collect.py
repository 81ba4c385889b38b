"""One streaming pass over an image set: everything the set metrics and the report need.

Each image is read once (a background thread reads ahead), normalised with the run's window,
and reduced to: the features of every extractor of the run, a small copy for pixel-space nearest neighbours (64 x 64,
or 32^3), a 128 x 128 8-bit view for the report (the middle slice of the last axis in 3D), a
random sample of its voxel values in physical units for the intensity histogram, and, for the
few images picked for MS-SSIM diversity, a copy in the first image's shape with every axis capped
at 256 (64 in 3D). No set is ever held in memory at full resolution.
"""

from __future__ import annotations

import collections
import contextlib
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from medgan.errors import InputError, MedganError
from medgan.io import FoundImage
from medgan.metrics.extractor import resize
from medgan.metrics.features import FeatureAccumulator
from medgan.metrics.memorization import unit_vectors
from medgan.metrics.sets import ImageSet, Window, load_single, shape_text

__all__ = ["SetData", "collect_set", "progress_bar"]

VIEW_SIDE = 128  # report thumbnails, pixels
PIXEL_SIDE = {2: 64, 3: 32}  # pixel-space nearest neighbours
DIVERSITY_SIDE = {2: 256, 3: 64}  # MS-SSIM diversity: larger axes shrink to this (5 scales fit 256, 3 fit 64)
VALUES_PER_SET = 2_000_000  # voxel values kept for the intensity histogram and distance
READ_AHEAD = 4


@dataclass
class SetData:
    """What one pass over a set leaves behind, row i for the set's image i."""

    images: ImageSet
    spatial_dims: int
    features: dict[str, np.ndarray]  # extractor tag -> [N, D]; empty when no metric needs an extractor
    pixels: np.ndarray  # [N, P] unit vectors (zero mean, unit norm) of the small copies
    views: np.ndarray  # [N, VIEW_SIDE, VIEW_SIDE] uint8, window-normalised
    values: np.ndarray  # voxel values in physical units (a random sample)
    value_counts: np.ndarray  # [N] how many of `values` each image gave, in order (floors split sets by image)
    diversity: np.ndarray | None  # [K, *DIVERSITY_SIDE] in [0, 1], the images picked for MS-SSIM
    shapes: collections.Counter = field(default_factory=collections.Counter)

    def values_of(self, rows: np.ndarray) -> np.ndarray:
        """The voxel values that the images at `rows` gave."""
        ends = np.cumsum(self.value_counts)
        starts = ends - self.value_counts
        return np.concatenate([self.values[starts[i] : ends[i]] for i in rows])


class _NoProgress:
    def add_task(self, *args, **kwargs) -> int:
        return 0

    def advance(self, *args, **kwargs) -> None:
        pass


@contextlib.contextmanager
def progress_bar(enabled: bool):
    """A rich progress display on stderr when it is a terminal (or a silent stand-in), cleared when done,
    so logs and piped output never fill with bars."""
    if not enabled or not sys.stderr.isatty():
        yield _NoProgress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield progress


def _load(item: FoundImage, role: str) -> tuple[np.ndarray, str | None] | MedganError:
    try:
        return load_single(item, role)
    except MedganError as err:  # unreadable: the caller skips it
        return err


def _read_ahead(images: ImageSet) -> Iterator[tuple[int, tuple[np.ndarray, str | None] | MedganError]]:
    """(index, (array, modality) or the error that made the image unreadable), read in a background thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: collections.deque = collections.deque()
        items = iter(enumerate(images.items))
        for index, item in items:
            pending.append((index, pool.submit(_load, item, images.role)))
            if len(pending) >= READ_AHEAD:
                break
        while pending:
            index, future = pending.popleft()
            result = future.result()
            nxt = next(items, None)
            if nxt is not None:
                pending.append((nxt[0], pool.submit(_load, nxt[1], images.role)))
            yield index, result


def skip_reason(images: ImageSet, index: int, err: MedganError) -> str:
    """How a skipped image is listed: its name in the set and why it was skipped."""
    return f"{images.name(index)}: {err.reason}"


def _view(image01: torch.Tensor) -> np.ndarray:
    """Middle slice of the last axis in 3D, resized to a square thumbnail, rows along the second array axis."""
    plane = image01[..., image01.shape[-1] // 2] if image01.ndim == 3 else image01
    small = resize(plane[None, None], (VIEW_SIDE, VIEW_SIDE))[0, 0]
    return (small.T.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def collect_set(
    images: ImageSet,
    window: Window,
    spatial_dims: int,
    accumulators: dict[str, FeatureAccumulator],  # extractor tag -> accumulator; empty for no features
    diversity_indices: np.ndarray,  # which images to keep for MS-SSIM diversity
    seed: int,  # voxel sampling
    progress=None,
) -> SetData:
    """Read every image of `images` once and reduce it (see the module docstring).

    Unreadable images are skipped: they leave `SetData.images` (so row i is still image i) and are
    listed with the reason in its `skipped`. An image of the wrong dimensionality is an error.
    """
    rng = np.random.default_rng(seed)
    per_image = max(1, VALUES_PER_SET // len(images))
    keep = {int(i): k for k, i in enumerate(diversity_indices)}
    pixels, views, values, shapes = [], [], [], collections.Counter()
    diversity = [None] * len(keep)
    diversity_shape = None
    kept, skipped = [], []
    task = progress.add_task(f"{images.role:5s} images", total=len(images)) if progress is not None else None
    for index, result in _read_ahead(images):
        if task is not None:
            progress.advance(task)
        if isinstance(result, MedganError):
            skipped.append(skip_reason(images, index, result))
            continue
        array = result[0]
        if array.ndim != spatial_dims:
            raise InputError(
                f"is {array.ndim}D ({shape_text(array.shape)}) but the {images.role} set is {spatial_dims}D; "
                "every image of a run needs the same number of spatial dimensions",
                path=images.items[index].source,
            )
        kept.append(images.items[index])
        shapes[shape_text(array.shape)] += 1
        flat = array.ravel()
        # every voxel of a small image; a sample without replacement of a larger one (identical sets then
        # give a histogram distance of 0, not the noise of resampling)
        values.append(flat if flat.size <= per_image else flat[rng.choice(flat.size, per_image, replace=False)])
        x01 = torch.from_numpy(window.apply(array))
        for accumulator in accumulators.values():
            accumulator.add(x01)
        pixels.append(resize(x01[None, None], (PIXEL_SIDE[spatial_dims],) * spatial_dims)[0, 0].numpy())
        views.append(_view(x01))
        if diversity_shape is None:  # never upsample: interpolation would fake structural similarity
            diversity_shape = tuple(min(n, DIVERSITY_SIDE[spatial_dims]) for n in array.shape)
        if index in keep:
            diversity[keep[index]] = resize(x01[None, None], diversity_shape)[0, 0]
    if not kept:
        raise InputError(
            f"none of the {len(images)} images of the {images.role} set is readable, e.g. {skipped[0]}",
            path=images.folder,
        )
    images = ImageSet(images.role, images.folder, kept, images.skipped + skipped)
    diversity = [d for d in diversity if d is not None]
    return SetData(
        images=images,
        spatial_dims=spatial_dims,
        features={tag: accumulator.features() for tag, accumulator in accumulators.items()},
        pixels=unit_vectors(np.stack(pixels)),
        views=np.stack(views),
        values=np.concatenate(values).astype(np.float32),
        value_counts=np.array([v.size for v in values], dtype=np.int64),
        diversity=torch.stack(diversity).numpy() if diversity else None,
        shapes=shapes,
    )
