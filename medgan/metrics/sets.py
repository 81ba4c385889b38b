"""Image sets for evaluation: find the images in a folder, read them as single-channel arrays in
physical units, and map intensities to [0, 1] for the feature extractors.

The mapping is one window (low, high) in physical units, the same for every set of a run, so an
intensity error in the generated images is never normalised away:

    x01 = clip((x - low) / (high - low), 0, 1)

Defaults: CT uses (-1000, 1000) HU (air to dense bone: lungs, fat, soft tissue and bone all stay
distinguishable); other modalities, whose units are arbitrary, use the 0.5th and 99.5th
percentiles of the voxels of up to 16 real images. The window and its source go into
metrics.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from medgan.errors import ConfigError, InputError, MedganError
from medgan.io import FoundImage, find_images, read_image
from medgan.io.dicom import skips_reported_by_caller

__all__ = [
    "CT_WINDOW_HU",
    "REPORT_APART",
    "ImageSet",
    "Window",
    "choose_window",
    "find_set",
    "load_single",
    "load_with_affine",
    "shape_text",
    "squeeze",
]
# How check_apart names the report folder and what it asks for: an --out apart from every input.
REPORT_APART = ("the report folder", "an --out apart from the inputs")

CT_WINDOW_HU = (-1000.0, 1000.0)
PERCENTILE_WINDOW = (0.5, 99.5)
WINDOW_SAMPLE_IMAGES = 16


@dataclass
class ImageSet:
    """The images found under one folder, in a stable (sorted) order."""

    role: str  # "real", "fake", "train": used in messages
    folder: str
    items: list[FoundImage]
    skipped: list[str]  # unreadable files passed over ("name: reason"), for the report's warnings

    def __len__(self) -> int:
        return len(self.items)

    def name(self, index: int) -> str:
        """The image's path relative to the set's folder (for reports)."""
        return _relative(self.items[index].source, self.folder)


def _relative(path: str, folder: str) -> str:
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive (Windows): the path as it is
        return path


@dataclass(frozen=True)
class Window:
    """Intensities in physical units -> [0, 1]."""

    low: float
    high: float
    source: str  # how it was chosen, for metrics.json

    def apply(self, array: np.ndarray) -> np.ndarray:
        return np.clip((array - self.low) / (self.high - self.low), 0.0, 1.0).astype(np.float32)

    def record(self) -> dict:
        return {
            "low": self.low,
            "high": self.high,
            "source": self.source,
            "formula": "clip((x - low) / (high - low), 0, 1)",
        }


def find_set(folder: str | os.PathLike, role: str) -> ImageSet:
    """Every image under `folder` (NIfTI, NRRD, MHA files; DICOM series), sorted by path."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError(f"the {role} set must be a folder of images", path=folder)
    with skips_reported_by_caller():  # each skipped file is named once, in the run's warnings and record
        found, problems = find_images(folder, skip_invalid=True)
    skipped = [f"{_relative(p.path, folder)}: {p.reason}" for p in problems]
    if not found:
        detail = f" ({len(skipped)} unreadable file(s), e.g. {skipped[0]})" if skipped else ""
        raise InputError(f"no images found in the {role} set{detail}", path=folder)
    return ImageSet(role, folder, sorted(found, key=lambda item: item.source), skipped)


def load_single(item: FoundImage | str, role: str = "") -> tuple[np.ndarray, str | None]:
    """The image (a found image, or a path) as float32 `[*spatial]` in physical units, and its modality.

    Axes of length 1 are dropped, so a slice stored as 256 x 256 x 1 counts as 2D.
    """
    array, modality, _ = load_with_affine(item, role)
    return squeeze(array, item if isinstance(item, str) else item.source), modality


def load_with_affine(item: FoundImage | str, role: str = "") -> tuple[np.ndarray, str | None, np.ndarray]:
    """The image as float32 `[*spatial]` (unit axes kept), its modality, and its voxel-to-world affine
    (RAS, mm; an identity when the reader gives none)."""
    source = item if isinstance(item, str) else item.source
    try:
        image = read_image(item) if isinstance(item, str) else item.load()
    except MedganError:
        raise
    except Exception as err:  # a reader's own exception: one line naming the file
        raise InputError(f"cannot read this {role} image ({type(err).__name__}: {err})", path=source) from None
    data = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(np.asarray(image))
    if data.shape[0] != 1:
        raise InputError(f"has {data.shape[0]} channels; evaluation takes single-channel images", path=source)
    array = data[0].to(torch.float32).numpy()
    affine = getattr(image, "affine", None)
    affine = np.eye(array.ndim + 1) if affine is None else np.asarray(affine, dtype=np.float64)
    meta = getattr(image, "meta", {}) or {}
    modality = meta.get("modality")
    return array, (str(modality).upper() if modality else None), affine


def squeeze(array: np.ndarray, source: str) -> np.ndarray:
    """`array` without its axes of length 1; it must then be 2D or 3D."""
    squeezed = array.reshape([n for n in array.shape if n > 1])
    if squeezed.ndim not in (2, 3):
        raise InputError(
            f"is neither 2D nor 3D after dropping unit axes (shape {shape_text(array.shape)})", path=source
        )
    return squeezed


def shape_text(shape) -> str:
    return "x".join(str(int(n)) for n in shape)


def choose_window(
    window: tuple[float, float] | None,
    modality: str | None,
    real: ImageSet | None = None,
) -> Window:
    """The user's window, the CT default, or the real set's percentiles (see the module docstring)."""
    if window is not None:
        low, high = (float(v) for v in window)
        if not np.isfinite([low, high]).all() or high <= low:
            raise ConfigError(f"the intensity window needs low < high; got {low}, {high}")
        return Window(low, high, "given by the user")
    if modality == "CT":
        return Window(*CT_WINDOW_HU, "CT default (HU)")
    if real is None:
        raise ConfigError("give an intensity window (--window LOW,HIGH): the modality is unknown")
    count = min(len(real), WINDOW_SAMPLE_IMAGES)
    picks = np.linspace(0, len(real) - 1, count).round().astype(int)
    values = []
    for i in picks:
        try:
            values.append(load_single(real.items[i], real.role)[0].ravel())
        except MedganError:  # unreadable: skipped (and reported) during the pass over the set
            continue
    if not values:
        raise InputError("none of the sampled real images is readable; cannot choose a window", path=real.folder)
    count = len(values)
    low, high = np.percentile(np.concatenate(values), PERCENTILE_WINDOW)
    if not high > low:
        raise InputError("the real images are constant; give an intensity window (--window LOW,HIGH)", path=real.folder)
    low_q, high_q = PERCENTILE_WINDOW
    source = f"percentiles {low_q}-{high_q} of {count} real image(s), modality {modality or 'unknown'}"
    return Window(float(low), float(high), source)
