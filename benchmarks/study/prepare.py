"""`prepare`: real T1 MR volumes from registry packages, normalised into one data folder.

Each source is fetched into the tests' cache (registry packages through `benchmarks/registry_data.py`,
Debian packages through `tests/external.py`), read with medgan's readers, brought to RAS, resampled
to 1 mm in-plane and `--slice-mm` between axial slices (never finer than the scan's own spacing),
mapped per subject to 0..1000, cropped to the head and written as int16 NIfTI with a BIDS sidecar,
plus `manifest.json` (sources, versions, licences, geometry, usable slices).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import registry_data
from benchmarks.study.common import log, real_dataset, scan_names, study_config

IN_PLANE_MM = 1.0
SCALE_MAX = 1000.0  # every subject's intensities: 0.5th..99.5th percentile inside the head -> 0..1000
HEAD_MARGIN_MM = 4.0
MAX_FOLDER_MB = 15.0
MIN_SUBJECTS = 3
NILEARN = ("nilearn", "0.14.1")
# The wheel's SHA-256 as the package index served it: a changed file is refused.
NILEARN_SHA256 = "725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a"


@dataclass
class Source:
    subject: str
    package: str  # where it comes from (registry and package)
    version: str
    license: str
    what: str
    fetch: Callable[[], tuple[Path, str]]  # -> (local file, its path inside the package)


def _external():
    """The tests' cache and Debian helpers (tests/external.py), and the exceptions its skips raise."""
    import pytest

    from tests import external

    return external, (Exception, pytest.skip.Exception, pytest.fail.Exception)


def _debian_file(package: str, relative: str) -> Path:
    external, _ = _external()
    path = external.debian_package(package) / relative
    if not path.is_file():
        raise RuntimeError(f"{relative} is missing from the Debian package {package}")
    return path


def _debian_version(package: str) -> str:
    """The version from the unpacked package's changelog (first line: 'source (version) dist; ...')."""
    external, _ = _external()
    changelog = external.cache_dir() / "debian" / package / "usr/share/doc" / package / "changelog.Debian.gz"
    with contextlib.suppress(OSError), gzip.open(changelog, "rt", encoding="utf-8", errors="replace") as fh:
        match = re.match(r"\S+ \(([^)]+)\)", fh.readline())
        if match:
            return match.group(1)
    return "unknown"


def _nilearn_mni() -> tuple[Path, str]:
    member = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    wheel = registry_data.pypi_file(*NILEARN, sha256=NILEARN_SHA256, kind="bdist_wheel")
    return registry_data.extract(wheel, member), member


def _pyradiomics_brain(name: str) -> Callable[[], tuple[Path, str]]:
    def fetch() -> tuple[Path, str]:
        image, _ = registry_data.pyradiomics_case(name)
        return image, f"{'-'.join(registry_data.PYRADIOMICS)}/data/{image.name}"

    return fetch


def _colin27() -> tuple[Path, str]:
    for name in ("ch2.nii.gz", "ch2better.nii.gz"):  # ch2: the whole head, 1 mm; ch2better: 0.5 mm, brain only
        relative = f"usr/share/mricron/templates/{name}"
        with contextlib.suppress(RuntimeError):
            return _debian_file("mricron-data", relative), relative
    raise RuntimeError("neither ch2better.nii.gz nor ch2.nii.gz is in mricron-data")


def _itk_kmeans() -> tuple[Path, str]:
    relative = "usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz"
    return _debian_file("insighttoolkit5-examples", relative), relative


def sources() -> list[Source]:
    mni_terms = ("BSD-3-Clause (nilearn); the ICBM 2009 template itself: free use, copy and distribution with "
                 "the copyright notice of the McConnell Brain Imaging Centre (attribution)")  # fmt: skip
    radiomics, radiomics_version = registry_data.PYRADIOMICS
    return [
        Source("mni152_2009", f"PyPI {NILEARN[0]} (wheel)", NILEARN[1], mni_terms,
               "MNI ICBM152 2009 nonlinear symmetric T1 template (brain only, as nilearn ships it): 152 subjects",
               _nilearn_mni),
        Source("colin27", "Debian mricron-data", "", "BSD-3-Clause (Debian copyright of mricron, Files: *)",
               "Colin27 (ch2: whole head, else ch2better: brain): one subject, 27 averaged T1 scans", _colin27),
        Source("itk_kmeans_t1", "Debian insighttoolkit5-examples", "", "Apache-2.0",
               "ITK example KmeansTest_T1UCharRaw: one T1 head scan, 8-bit", _itk_kmeans),
        Source("pyradiomics_brain1", f"PyPI {radiomics} (sdist)", radiomics_version, "BSD-3-Clause",
               "pyradiomics test case brain1: T1 post-contrast with a tumour, 6.5 mm slices",
               _pyradiomics_brain("brain1")),
        Source("pyradiomics_brain2", f"PyPI {radiomics} (sdist)", radiomics_version, "BSD-3-Clause",
               "pyradiomics test case brain2: T1 post-contrast with a tumour, 6.5 mm slices",
               _pyradiomics_brain("brain2")),
    ]  # fmt: skip


def head_mask(volume: np.ndarray) -> np.ndarray:
    """The head: voxels above 10% of the 99.5th percentile, opened, largest component, holes filled."""
    from scipy import ndimage

    mask = volume > 0.1 * np.percentile(volume, 99.5)
    mask = ndimage.binary_opening(mask, iterations=2)
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
        mask = labels == 1 + int(np.argmax(sizes))
    for k in range(mask.shape[2]):  # axial slice by slice: a 3D fill leaves open skull bases unfilled
        mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return mask


def normalise_subject(path: Path, slice_mm: float) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read with medgan, reorient to RAS, resample, scale to 0..1000 in the head, crop to the head."""
    from medgan.data.transforms import resample
    from medgan.io import read_image
    from medgan.io.geometry import orientation_code, reorient_like, respaced_affine, spacing_mm
    from medgan.io.image import affine_of

    image = read_image(path)
    affine = affine_of(image)
    data = image.as_tensor()
    if data.ndim != 4 or data.shape[0] != 1:
        raise RuntimeError(f"expected one 3D channel, got shape {tuple(data.shape)}")
    original = {"shape": list(data.shape[1:]), "spacing_mm": [round(s, 4) for s in spacing_mm(affine, 3)],
                "orientation": orientation_code(affine), "dtype": str(data.dtype).replace("torch.", "")}  # fmt: skip
    volume, affine = reorient_like(data.float(), affine, np.eye(3))  # RAS: axes permuted and flipped, exactly

    spacing = spacing_mm(affine, 3)
    target = [IN_PLANE_MM, IN_PLANE_MM, max(slice_mm, spacing[2])]  # never interpolate new axial slices
    volume = resample(volume, spacing, target)[0].numpy()
    affine = respaced_affine(affine, target)  # the same field of view

    mask = head_mask(volume)
    low, high = np.percentile(volume[mask], [0.5, 99.5])
    scaled = np.clip((volume - low) / max(high - low, 1e-6), 0.0, 1.0) * SCALE_MAX
    margin = [math.ceil(HEAD_MARGIN_MM / t) for t in target]
    where = np.argwhere(mask)
    start = np.maximum(where.min(0) - margin, 0)
    stop = np.minimum(where.max(0) + 1 + np.asarray(margin), volume.shape)
    scaled = scaled[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
    affine[:3, 3] += affine[:3, :3] @ start  # the crop's first voxel
    details = {
        "original": original,
        "written": {
            "shape": list(scaled.shape),
            "spacing_mm": [round(t, 4) for t in target],
            "orientation": "RAS",
            "dtype": "int16",
            "crop_start_voxel": start.tolist(),
        },
        "intensity": {
            "low": float(low),
            "high": float(high),
            "maps_to": [0.0, SCALE_MAX],
            "rule": "0.5th and 99.5th percentiles inside the head mask, clipped",
        },
        "head_fraction_of_crop": float(mask[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]].mean()),
    }
    return np.round(scaled).astype(np.int16), affine, details


def usable_slices(folder: str, config: str, sets: list[str]) -> tuple[int, dict[str, int], list[float]]:
    """Slices the study's config keeps (slice_range, min_foreground_fraction), per file, as the trainer counts them."""
    dataset = real_dataset(study_config(config, folder, sets))
    names = scan_names(dataset)
    counts: dict[str, int] = {}
    for scan, _ in dataset.index:
        counts[names[scan]] = counts.get(names[scan], 0) + 1
    return len(dataset), counts, list(dataset.windows["image"])


def _write_subject(folder: str, subject: str, volume: np.ndarray, affine: np.ndarray) -> str:
    """The volume as int16 NIfTI, with a BIDS sidecar naming the modality (medgan's NIfTI reader takes it)."""
    from medgan.io import write_image
    from medgan.io.atomic import atomic_file
    from medgan.io.image import make_image

    name = f"{subject}.nii.gz"
    description = f"medgan small data study: {subject}, 0..{SCALE_MAX:.0f}"
    write_image(make_image(volume[None], affine, {"modality": "MR", "description": description}),
                os.path.join(folder, name), overwrite=True)  # fmt: skip
    with atomic_file(os.path.join(folder, f"{subject}.json"), overwrite=True) as path, open(path, "w") as fh:
        json.dump({"Modality": "MR"}, fh)
    return name


def _manifest(args: argparse.Namespace, subjects: list[dict], skipped: list[dict], total: int, window: list[float],
              size: int) -> dict[str, Any]:  # fmt: skip
    from medgan import __version__

    return {
        "study": "medgan small real data study",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "medgan_version": __version__,
        "command": " ".join(sys.argv),
        "processing": {
            "orientation": "RAS",
            "in_plane_mm": IN_PLANE_MM,
            "slice_mm": f"max({args.slice_mm}, the scan's own): axial slices are never interpolated",
            "resampling": "medgan.data.transforms.resample (area averaging down, linear up)",
            "intensity": f"per subject: 0.5th-99.5th percentile inside the head -> 0..{SCALE_MAX:.0f}, int16",
            "crop": f"head bounding box + {HEAD_MARGIN_MM} mm",
            "readers": "medgan.io.read_image (NIfTI: nibabel; NRRD: SimpleITK)",
        },
        "slice_filter": {
            "config": args.config,
            "overrides": list(args.set),
            "window": window,
            "usable_axial_slices": total,
        },
        "subjects": subjects,
        "skipped": skipped,
        "size_mb": round(size / 2**20, 2),
        "note": "a build product: never commit it; rebuild with `benchmarks/small_data_study.py prepare`",
    }


def prepare(args: argparse.Namespace) -> int:
    from medgan.io.atomic import atomic_dir, atomic_file

    try:
        external, skips = _external()
    except ImportError as err:
        log(f"cannot import tests/external.py ({err}): install the test extra (pytest, pydicom, nibabel)")
        return 1
    log(f"cache: {external.cache_dir()}")
    out = os.path.abspath(args.out)
    subjects, skipped = [], []
    with atomic_dir(out, overwrite=True) as temp:
        for source in sources():
            if args.only and source.subject not in args.only:
                continue
            try:
                path, member = source.fetch()
                version = source.version or _debian_version(source.package.split()[-1])
                volume, affine, details = normalise_subject(path, args.slice_mm)
            except skips as err:  # a failed download or an unreadable file: skip this subject, say why
                reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                warnings.warn(f"skipping {source.subject}: {reason}", stacklevel=1)
                skipped.append({"subject": source.subject, "package": source.package, "reason": reason})
                continue
            name = _write_subject(temp, source.subject, volume, affine)
            subjects.append({"subject": source.subject, "file": name, "package": source.package,
                             "version": version, "member": member, "license": source.license,
                             "description": source.what, **details})  # fmt: skip
            log(f"{source.subject}: {details['original']['shape']} @ {details['original']['spacing_mm']} mm "
                f"{details['original']['orientation']} -> {details['written']['shape']} @ "
                f"{details['written']['spacing_mm']} mm RAS")  # fmt: skip
        if len(subjects) < MIN_SUBJECTS:
            log(f"only {len(subjects)} subject(s) available (at least {MIN_SUBJECTS} needed): {skipped}")
            return 1
        total, per_file, window = usable_slices(temp, args.config, args.set)
        for subject in subjects:
            subject["usable_axial_slices"] = per_file.get(subject["file"], 0)
        size = sum(f.stat().st_size for f in Path(temp).iterdir())
        manifest = _manifest(args, subjects, skipped, total, window, size)
        with atomic_file(os.path.join(temp, "manifest.json"), overwrite=True) as path, open(path, "w") as fh:
            json.dump(manifest, fh, indent=2)
    if size / 2**20 > MAX_FOLDER_MB:
        log(f"warning: {out} holds {size / 2**20:.1f} MB (more than {MAX_FOLDER_MB} MB)")
    print(f"{'subject':22s} {'shape':>16s} {'spacing mm':>16s} {'usable slices':>14s}")
    for s in subjects:
        shape = "x".join(map(str, s["written"]["shape"]))
        spacing = "x".join(f"{v:g}" for v in s["written"]["spacing_mm"])
        print(f"{s['subject']:22s} {shape:>16s} {spacing:>16s} {s['usable_axial_slices']:14d}")
    print(f"{len(subjects)} subjects, {total} usable axial slices, {size / 2**20:.1f} MB in {out}")
    return 0
