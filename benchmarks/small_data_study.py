"""Small real data study: does the default 2D config train on a few hundred real brain MR slices
from a handful of subjects without mode collapse, over several seeds, and how close do its samples come?

    # here (CPU, PyPI and Debian reachable): gather and normalise the scans; DIR is a build product, never committed
    python benchmarks/small_data_study.py prepare --out .study_data

    # on the GPU (no network): one training process per seed, all at once on the one GPU, then evaluation
    python benchmarks/small_data_study.py run --data .study_data --out study_out --seeds 0 1 2 --minutes 2.5 \
        --device cuda [--config configs/synth2d_256.yaml] [--set key=value ...] [--samples 500] [--json FILE] \
        [--stock-seeds 0 ...] [--figure FILE.png]

`prepare` fetches real T1 MR volumes from registry packages (see /work/shared/DATA.md) into the tests'
cache (`.cache/medgan-tests/` or `$MEDGAN_TEST_CACHE`, fetched with the helpers of `tests/external.py`):
the MNI152 2009 T1 template (nilearn wheel, read out of the zip), Colin27 (Debian `mricron-data`),
ITK's `KmeansTest_T1UCharRaw` (Debian `insighttoolkit5-examples`) and the brain1/brain2 T1 of the
pyradiomics 3.0.1 sdist. Each is read with medgan's readers, reoriented to RAS, resampled to 1 mm
in-plane and `--slice-mm` (2 mm) between axial slices (never finer than the scan's own spacing, so
no slice is made up by interpolation), mapped per subject to 0..1000 (0.5th and 99.5th percentiles
inside the head), cropped to the head and written as int16 NIfTI with a BIDS sidecar naming the
modality (MR), plus `manifest.json` (sources, versions, licences, geometry, usable slices).

`run` starts `python -m medgan train` once per seed, concurrently, stopped by train.time_limit_minutes
with a final checkpoint; then draws `--samples` images from each final EMA generator and scores them
against every usable real slice, loaded by medgan's own dataset code with the run's config (so the
real set is exactly what the trainer saw, in its window): Fréchet distance and KID on the
`random_cnn` extractor (and `efficientnet_lite0` when it imports), precision/recall/density/coverage
(k = 5), MS-SSIM diversity, nearest-real-neighbour spread, and a mode-collapse verdict per seed.
Reference points: FD between random halves of the real set (the floor, and the same N for the fakes)
and the generator as initialised (step 0). The stock peer trains beside them for the same time and
is scored the same way: MONAI's MedNIST DCGAN tutorial as published (64 x 64, its Generator and
Discriminator, BCE, Adam 2e-4, batch 300, five D steps per G step; `--stock-seeds`, none to leave it
out), its samples upsampled to larger real slices to be scored. `--figure` writes real slices and every seed's
first samples as one PNG. Writes everything to one JSON file; exits 0 when at least one seed was
evaluated, even if others failed (their failure and log tail are recorded).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import traceback
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medgan import __version__ as MEDGAN_VERSION  # noqa: E402

DEFAULT_CONFIG = "configs/synth2d_256.yaml"
IN_PLANE_MM = 1.0
SCALE_MAX = 1000.0  # every subject's intensities: 0.5th..99.5th percentile inside the head -> 0..1000
HEAD_MARGIN_MM = 4.0
MAX_FOLDER_MB = 15.0
MIN_SUBJECTS = 3
NILEARN = ("nilearn", "0.14.1")
PYRADIOMICS = ("pyradiomics", "3.0.1")

# The mode-collapse verdict: a seed passes when all three hold (fake vs real, same extractor, same window).
MIN_RECALL = 0.1  # the samples reach at least this fraction of the real manifold (random_cnn, k = 5)
MAX_MS_SSIM_EXCESS = 0.1  # mean MS-SSIM between fake pairs at most this above the real set's: not near-identical
MIN_DISTINCT_NEIGHBOURS = 0.2  # distinct nearest real slices of the samples / min(real, fake) count


def log(message: str) -> None:
    print(f"[small_data_study] {message}", file=sys.stderr, flush=True)


# =============================================================================================== prepare


@dataclass
class Source:
    subject: str
    package: str  # where it comes from (registry and package)
    version: str
    license: str
    what: str
    fetch: Callable[[], tuple[Path, str]]  # -> (local file, its path inside the package)


def _downloaded(dest: Path, stems: set[str]) -> list[Path]:
    """Wheels and sdists of a release already in dest (not the folders members are extracted to)."""
    return [p for p in dest.glob("*") if p.is_file() and any(p.name.startswith(s) for s in stems)
            and p.name.endswith((".whl", ".tar.gz", ".zip"))]  # fmt: skip


def _pip_download(spec: str, dest: Path, *extra: str) -> Path:
    """`pip download --no-deps SPEC` into dest (kept between runs); returns the file."""
    name, version = spec.split("==")
    stems = {f"{name}-{version}", f"{name.replace('-', '_')}-{version}"}
    found = _downloaded(dest, stems)
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", *extra, spec,
               "-d", str(dest)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    found = _downloaded(dest, stems)
    if result.returncode != 0 or not found:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no file"]
        raise RuntimeError(f"pip download {spec} failed: {lines[-1]}")
    return found[0]


def _pypi_sdist(name: str, version: str, dest: Path) -> Path:
    """The sdist from PyPI's JSON API, checked against its SHA-256 (when pip cannot build its metadata)."""
    with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/{version}/json", timeout=60) as response:
        info = json.load(response)
    sdists = [u for u in info["urls"] if u["packagetype"] == "sdist"]
    if not sdists:
        raise RuntimeError(f"PyPI lists no sdist for {name} {version}")
    url, digest = sdists[0]["url"], sdists[0]["digests"]["sha256"]
    target = dest / sdists[0]["filename"]
    dest.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    with urllib.request.urlopen(url, timeout=300) as response, open(partial, "wb") as fh:
        shutil.copyfileobj(response, fh)
    if hashlib.sha256(partial.read_bytes()).hexdigest() != digest:
        partial.unlink()
        raise RuntimeError(f"{url}: SHA-256 mismatch")
    os.replace(partial, target)
    return target


def _extract(archive: Path, member: str, dest: Path) -> Path:
    """One member of a wheel (zip) or sdist (tar.gz), extracted once under dest."""
    target = dest / member
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(partial, "wb") as fh:
            shutil.copyfileobj(src, fh)
    else:
        with tarfile.open(archive, "r:*") as tf:
            src = tf.extractfile(member)
            if src is None:
                raise RuntimeError(f"{member} is not a file in {archive.name}")
            with src, open(partial, "wb") as fh:
                shutil.copyfileobj(src, fh)
    os.replace(partial, target)
    return target


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


def _pypi_cache() -> Path:
    external, _ = _external()
    return external.cache_dir() / "pypi"


def _nilearn_mni() -> tuple[Path, str]:
    member = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    wheel = _pip_download("==".join(NILEARN), _pypi_cache(), "--only-binary", ":all:")
    return _extract(wheel, member, _pypi_cache() / "-".join(NILEARN)), member


def _pyradiomics_sdist() -> Path:
    spec = "==".join(PYRADIOMICS)
    try:
        return _pip_download(spec, _pypi_cache(), "--no-build-isolation", "--no-binary", ":all:")
    except (RuntimeError, subprocess.SubprocessError) as err:
        log(f"{err}; fetching the sdist through PyPI's JSON API instead")
        return _pypi_sdist(*PYRADIOMICS, _pypi_cache())


def _pyradiomics_brain(name: str) -> Callable[[], tuple[Path, str]]:
    def fetch() -> tuple[Path, str]:
        member = f"{'-'.join(PYRADIOMICS)}/data/{name}_image.nrrd"
        return _extract(_pyradiomics_sdist(), member, _pypi_cache()), member

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
    return [
        Source("mni152_2009", f"PyPI {NILEARN[0]} (wheel)", NILEARN[1], mni_terms,
               "MNI ICBM152 2009 nonlinear symmetric T1 template (brain only, as nilearn ships it): 152 subjects",
               _nilearn_mni),
        Source("colin27", "Debian mricron-data", "", "BSD-3-Clause (Debian copyright of mricron, Files: *)",
               "Colin27 (ch2: whole head, else ch2better: brain): one subject, 27 averaged T1 scans", _colin27),
        Source("itk_kmeans_t1", "Debian insighttoolkit5-examples", "", "Apache-2.0",
               "ITK example KmeansTest_T1UCharRaw: one T1 head scan, 8-bit", _itk_kmeans),
        Source("pyradiomics_brain1", f"PyPI {PYRADIOMICS[0]} (sdist)", PYRADIOMICS[1], "BSD-3-Clause",
               "pyradiomics test case brain1: T1 post-contrast with a tumour, 6.5 mm slices",
               _pyradiomics_brain("brain1")),
        Source("pyradiomics_brain2", f"PyPI {PYRADIOMICS[0]} (sdist)", PYRADIOMICS[1], "BSD-3-Clause",
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
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    from medgan.data.transforms import resample, spacing_of
    from medgan.io import read_image
    from medgan.io.geometry import orientation_code
    from medgan.io.image import affine_of

    image = read_image(path)
    affine = affine_of(image)
    data = image.as_tensor()
    if data.ndim != 4 or data.shape[0] != 1:
        raise RuntimeError(f"expected one 3D channel, got shape {tuple(data.shape)}")
    original = {"shape": list(data.shape[1:]), "spacing_mm": [round(s, 4) for s in spacing_of(affine, 3)],
                "orientation": orientation_code(affine), "dtype": str(data.dtype).replace("torch.", "")}  # fmt: skip
    volume = data[0].float().numpy()
    transform = ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))
    affine = affine @ inv_ornt_aff(transform, volume.shape)
    volume = np.ascontiguousarray(apply_orientation(volume, transform))

    spacing = spacing_of(affine, 3)
    target = [IN_PLANE_MM, IN_PLANE_MM, max(slice_mm, spacing[2])]  # never interpolate new axial slices
    volume = resample(torch.from_numpy(volume)[None], spacing, target)[0].numpy()
    directions = affine[:3, :3] / np.asarray(spacing)
    affine = affine.copy()
    affine[:3, :3] = directions * np.asarray(target)
    affine[:3, 3] += directions @ (0.5 * (np.asarray(target) - np.asarray(spacing)))  # same field of view

    mask = head_mask(volume)
    low, high = np.percentile(volume[mask], [0.5, 99.5])
    scaled = np.clip((volume - low) / max(high - low, 1e-6), 0.0, 1.0) * SCALE_MAX
    margin = [math.ceil(HEAD_MARGIN_MM / t) for t in target]
    where = np.argwhere(mask)
    start = np.maximum(where.min(0) - margin, 0)
    stop = np.minimum(where.max(0) + 1 + np.asarray(margin), volume.shape)
    scaled = scaled[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
    affine[:3, 3] += affine[:3, :3] @ start
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
    cfg = study_config(config, folder, sets)
    dataset = _real_dataset(cfg)
    counts: dict[str, int] = {}
    records = [os.path.basename(str(r["image"])) for r in dataset.scans.data]
    for scan, _ in dataset.index:
        counts[records[scan]] = counts.get(records[scan], 0) + 1
    return len(dataset), counts, list(dataset.windows["image"])


def prepare(args: argparse.Namespace) -> int:
    from medgan.io import write_image
    from medgan.io.atomic import atomic_dir, atomic_file
    from medgan.io.image import make_image

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
            name = f"{source.subject}.nii.gz"
            description = f"medgan small data study: {source.subject}, 0..{SCALE_MAX:.0f}"
            write_image(make_image(volume[None], affine, {"modality": "MR", "description": description}),
                        os.path.join(temp, name), overwrite=True)  # fmt: skip
            # A BIDS sidecar: medgan's NIfTI reader takes the modality from it.
            sidecar = os.path.join(temp, f"{source.subject}.json")
            with atomic_file(sidecar, overwrite=True) as path_, open(path_, "w") as fh:
                json.dump({"Modality": "MR"}, fh)
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
        manifest = {
            "study": "medgan small real data study",
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "medgan_version": MEDGAN_VERSION,
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


# =================================================================================================== run


def study_overrides(data: str, minutes: float | None, log_every: int, checkpoint_every: int) -> list[str]:
    """What the study sets on top of the config (the user's --set come after, and win)."""
    sets = [
        f"data.source={data}",
        "data.window=null",  # the volumes are 0..1000 per subject: the trainer's percentile window
        "data.num_workers=2",
        "train.steps=1000000",  # the time limit ends the run
        "train.tensorboard=false",
        f"train.log_every_steps={log_every}",
        "train.sample_every_steps=1000000",  # one grid, at the end
        f"train.checkpoint_every_steps={checkpoint_every}",  # a fallback if a run has to be killed
        "train.keep_checkpoints=1",
        "train.compile=false",  # compiling costs a large share of a few minutes; --set train.compile=true to test it
    ]
    if minutes is not None:
        sets.append(f"train.time_limit_minutes={minutes}")
    return sets


def study_config(config: str, data: str, sets: list[str], seed: int | None = None):
    from medgan.config import load_config
    from medgan.tasks.config import TrainConfig

    base = [f"data.source={data}", "data.window=null"]
    return load_config(TrainConfig, config, [*base, *sets, *([f"seed={seed}"] if seed is not None else [])])


def _real_dataset(cfg):
    """The training set exactly as the trainer builds it (same config, same code)."""
    from medgan.training import build

    data = cfg.data.model_copy(update={"cache": "memory"})
    return build.build_dataset(data, cfg.task, "")


def _middle_channel(x: torch.Tensor, record: dict) -> torch.Tensor:
    """[C * slab, H, W] -> [H, W]: the first image channel of the middle slice of a slab."""
    middle = (record["channels"] // record["image_channels"]) // 2
    return x[middle * record["image_channels"]]


def real_images(dataset) -> tuple[torch.Tensor, list[int]]:
    """Every usable real slice in [0, 1] (the trainer's window), and the scan each came from."""
    images = [_middle_channel(dataset[(i, 0)]["image"], dataset.record) for i in range(len(dataset))]
    return (torch.stack(images).clamp(-1, 1) + 1) / 2, [scan for scan, _ in dataset.index]


@torch.no_grad()
def generate(g: torch.nn.Module, record: dict, count: int, seed: int, device: torch.device, batch: int) -> torch.Tensor:
    """`count` samples in [0, 1] as `medgan synthesize` draws them (same seed, same latents)."""
    z = torch.randn(count, g.latent_dim, generator=torch.Generator().manual_seed(seed))
    out = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, count, batch):
            images = g(z[start : start + batch].to(device), None).float()
            out.append(torch.stack([_middle_channel(x, record) for x in images]).cpu())
    return (torch.cat(out).clamp(-1, 1) + 1) / 2


def untrained_generator(cfg, record: dict, device: torch.device) -> torch.nn.Module:
    """The generator as the trainer initialises it for this seed (step 0; the EMA starts as a copy)."""
    from medgan.training import build
    from medgan.training.objectives import OBJECTIVES, objective_class

    task = OBJECTIVES.get(cfg.task)
    sizes = objective_class(cfg.task).network_kwargs(record, **task.keywords)
    torch.manual_seed(cfg.seed)
    nets = build.build_networks(task.func.ROLES, sizes, cfg.generator, cfg.discriminator, cfg.data.spatial_dims,
                                cfg.data.image_size, cfg.train.batch_size)  # fmt: skip
    return nets["G"].to(device).eval().requires_grad_(False)


def latest_checkpoint(run_dir: str) -> str | None:
    from medgan.tasks.checkpoint import latest_checkpoint as latest

    with contextlib.suppress(Exception):
        return latest(run_dir)
    return None


def read_stats(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "stats.jsonl")
    rows = []
    with contextlib.suppress(OSError), open(path) as fh:
        for line in fh:
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return rows


def summarise_run(run_dir: str) -> dict[str, Any]:
    rows = read_stats(run_dir)
    if not rows:
        return {"log_lines": 0}
    last = rows[-1]
    losses = {k: v for k, v in last.items() if k.startswith("loss") or k in ("real_sign", "r1")}
    memory = [r["gpu_memory_gib"] for r in rows if isinstance(r.get("gpu_memory_gib"), (int, float))]
    keep = ("step", "images_seen", "augment_p", "real_sign", "samples_per_s", "time_s")
    return {
        "log_lines": len(rows),
        "steps": last.get("step"),
        "images_seen": last.get("images_seen"),
        "augment_p": last.get("augment_p"),
        "samples_per_s_last": last.get("samples_per_s"),
        "train_time_s": last.get("time_s"),
        "losses_last": losses,
        "gpu_memory_gib_max": max(memory) if memory else None,
        "trajectory": [
            {k: r[k] for k in r if k in keep or k.startswith("loss")} for r in rows[:: max(1, len(rows) // 40)]
        ],
    }


def tail(path: str, chars: int = 3000) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as fh:
        return fh.read()[-chars:]
    return ""


def train_seeds(args: argparse.Namespace, out: str, sets: list[str]) -> tuple[dict[str, dict], dict[str, dict]]:
    """One `medgan train` per seed and one stock DCGAN per --stock-seeds, all at once; each stopped by its time
    limit (or SIGTERM at --kill-after). Returns (medgan runs, stock runs), keyed by seed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    jobs = len(args.seeds) + len(args.stock_seeds)
    if "OMP_NUM_THREADS" not in env:  # share the cores instead of every process taking all of them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, jobs)))
    procs: dict[tuple[str, int], dict[str, Any]] = {}
    stock_device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    for kind, seed in [*(("medgan", s) for s in args.seeds), *(("stock", s) for s in args.stock_seeds)]:
        name = f"seed{seed}" if kind == "medgan" else f"stock{seed}"
        run_dir, log_path = os.path.join(out, name), os.path.join(out, f"{name}.log")
        if kind == "medgan":
            command = [sys.executable, "-m", "medgan", "train", "-c", args.config, "--run-dir", run_dir,
                       "--set", f"seed={seed}"]  # fmt: skip
        else:
            minutes = args.minutes if args.minutes > 0 else args.kill_after / 60
            command = [sys.executable, str(Path(__file__).resolve()), "stock", "--data", os.path.abspath(args.data),
                       "--config", args.config, "--out", run_dir, "--seed", str(seed), "--minutes", str(minutes),
                       "--device", stock_device]  # fmt: skip
        for item in [*sets, *args.set]:
            command += ["--set", item]
        fh = open(log_path, "w")  # noqa: SIM115 - closed when the process ends
        began = time.monotonic()
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        procs[(kind, seed)] = {"proc": proc, "log": fh, "began": began, "run_dir": run_dir, "log_path": log_path,
                               "command": command}  # fmt: skip
    log(f"training {len(procs)} run(s) concurrently ({len(args.seeds)} medgan, {len(args.stock_seeds)} stock); "
        f"kill timer {args.kill_after:.0f} s")  # fmt: skip
    start = time.monotonic()
    killed: set[tuple[str, int]] = set()
    while any(p["proc"].poll() is None for p in procs.values()):
        if time.monotonic() - start > args.kill_after:
            for key, p in procs.items():
                if p["proc"].poll() is None:
                    killed.add(key)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p["proc"].pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(p["proc"].poll() is None for p in procs.values()):
                time.sleep(0.5)
            for p in procs.values():
                if p["proc"].poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p["proc"].pid, signal.SIGKILL)
            break
        for p in procs.values():
            if p["proc"].poll() is not None and "wall_s" not in p:
                p["wall_s"] = time.monotonic() - p["began"]
        time.sleep(0.5)
    results: dict[str, dict[str, dict]] = {"medgan": {}, "stock": {}}
    for (kind, seed), p in procs.items():
        code = p["proc"].wait()
        p["log"].close()
        wall = p.get("wall_s", time.monotonic() - p["began"])
        if kind == "medgan":
            checkpoint = latest_checkpoint(p["run_dir"])
            summary = summarise_run(p["run_dir"])
        else:
            path = os.path.join(p["run_dir"], "generator.pt")
            checkpoint = path if os.path.exists(path) else None
            summary = {}
            with contextlib.suppress(OSError, ValueError), open(os.path.join(p["run_dir"], "summary.json")) as fh:
                summary = json.load(fh)
        ok = code == 0 and checkpoint is not None
        result = {
            "status": "ok" if ok else ("killed" if (kind, seed) in killed else "failed"),
            "returncode": code,
            "wall_s": round(wall, 2),
            "checkpoint": checkpoint,
            "run_dir": p["run_dir"],
            "log": p["log_path"],
            "command": " ".join(p["command"]),
            **summary,
        }
        if not ok:
            result["log_tail"] = tail(p["log_path"])
        results[kind][str(seed)] = result
        log(f"{kind} seed {seed}: {result['status']} (exit {code}) after {wall:.0f} s, step {result.get('steps')}")
    return results["medgan"], results["stock"]


# ======================================================================== the stock peer: MONAI's DCGAN tutorial

# The MONAI MedNIST GAN tutorial, as published: 64 x 64 images scaled to 0..1, monai.networks.nets Generator and
# Discriminator with its arguments, normal_init, a sigmoid on G, BCE, Adam 2e-4 (0.5, 0.999), batch 300, and per
# batch one G step followed by 5 D steps on the same real and generated images. Augmentation as the tutorial:
# random rotation (up to 15 degrees), flip and zoom (0.9 to 1.1). One change, in the peer's favour: no DataLoader
# workers (a few hundred cached slices make one batch, and workers would be restarted every epoch).
STOCK = {"image_size": 64, "latent_size": 64, "batch_size": 300, "learning_rate": 2e-4, "betas": (0.5, 0.999),
         "disc_train_steps": 5}  # fmt: skip


def stock_networks() -> tuple[torch.nn.Module, torch.nn.Module]:
    from monai.networks import normal_init
    from monai.networks.nets import Discriminator, Generator

    size = STOCK["image_size"]
    d = Discriminator(in_shape=(1, size, size), channels=(8, 16, 32, 64, 1), strides=(2, 2, 2, 2, 1),
                      num_res_units=1, kernel_size=5)  # fmt: skip
    g = Generator(latent_shape=STOCK["latent_size"], start_shape=(64, size // 8, size // 8), channels=[32, 16, 8, 1],
                  strides=[2, 2, 2, 1])  # fmt: skip
    d.apply(normal_init)
    g.apply(normal_init)
    g.conv.add_module("activation", torch.nn.Sigmoid())
    return g, d


def stock_real(real: torch.Tensor) -> torch.Tensor:
    """The real slices ([N, H, W] in 0..1) at the tutorial's 64 x 64."""
    size = STOCK["image_size"]
    if tuple(real.shape[1:]) == (size, size):
        return real[:, None].clone()
    return torch.nn.functional.interpolate(real[:, None], size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False).clamp(0, 1)  # fmt: skip


def stock_train(args: argparse.Namespace) -> int:
    """Train the tutorial's DCGAN on the study's slices until --minutes (or SIGTERM); save G and a summary."""
    from monai.data import CacheDataset
    from monai.transforms import Compose, RandFlip, RandRotate, RandZoom, ScaleIntensity
    from monai.utils import set_determinism

    began = time.monotonic()
    stop = {"signal": None}
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))
    os.makedirs(args.out, exist_ok=True)
    device = torch.device(args.device)
    cfg = study_config(args.config, os.path.abspath(args.data), list(args.set))
    real, _ = real_images(_real_dataset(cfg))
    images = stock_real(real)
    set_determinism(seed=args.seed)
    transforms = Compose([
        ScaleIntensity(),
        RandRotate(range_x=math.pi / 12, prob=0.5, keep_size=True),
        RandFlip(spatial_axis=0, prob=0.5),
        RandZoom(min_zoom=0.9, max_zoom=1.1, prob=0.5),
    ])  # fmt: skip
    dataset = CacheDataset(list(images), transforms, progress=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=STOCK["batch_size"], shuffle=True, num_workers=0)
    g, d = stock_networks()
    g, d = g.to(device), d.to(device)
    bce = torch.nn.BCELoss()
    opt_d = torch.optim.Adam(d.parameters(), STOCK["learning_rate"], betas=STOCK["betas"])
    opt_g = torch.optim.Adam(g.parameters(), STOCK["learning_rate"], betas=STOCK["betas"])
    deadline = began + args.minutes * 60
    step, seen, rows = 0, 0, []
    stats = open(os.path.join(args.out, "stats.jsonl"), "w")  # noqa: SIM115 - closed below
    last_log = time.monotonic()
    while time.monotonic() < deadline and stop["signal"] is None:
        for batch in loader:
            real_batch = torch.as_tensor(batch).to(device)
            latent = torch.randn(real_batch.shape[0], STOCK["latent_size"], device=device)
            opt_g.zero_grad()
            fake = g(latent)
            out = d(fake)
            loss_g = bce(out, torch.ones_like(out))
            loss_g.backward()
            opt_g.step()
            loss_d_total = 0.0
            for _ in range(STOCK["disc_train_steps"]):
                opt_d.zero_grad()
                on_real, on_fake = d(real_batch), d(fake.detach())
                loss_d = (bce(on_real, torch.ones_like(on_real)) + bce(on_fake, torch.zeros_like(on_fake))) / 2
                loss_d.backward()
                opt_d.step()
                loss_d_total += loss_d.item()
            step += 1
            seen += real_batch.shape[0]
            if time.monotonic() - last_log > 10 or step == 1:
                last_log = time.monotonic()
                row = {"step": step, "images_seen": seen, "loss_g": loss_g.item(),
                       "loss_d": loss_d_total / STOCK["disc_train_steps"],
                       "time_s": round(last_log - began, 2)}  # fmt: skip
                rows.append(row)
                stats.write(json.dumps(row) + "\n")
                stats.flush()
            if time.monotonic() >= deadline or stop["signal"] is not None:
                break
    stats.close()
    path = os.path.join(args.out, "generator.pt")
    torch.save({"G": g.state_dict(), "step": step}, path + ".partial")
    os.replace(path + ".partial", path)
    summary = {"steps": step, "images_seen": seen, "train_time_s": round(time.monotonic() - began, 2),
               "stopped_by": "SIGTERM" if stop["signal"] else "time limit", "recipe": STOCK, "data_loader_workers": 0,
               "image_size": [STOCK["image_size"]] * 2, "real_slices": len(images),
               "trajectory": rows[:: max(1, len(rows) // 40)], "losses_last": rows[-1] if rows else None}  # fmt: skip
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2, default=float)
    log(f"stock seed {args.seed}: {step} steps, {seen} images in {summary['train_time_s']:.0f} s")
    return 0


@torch.no_grad()
def stock_generate(path: str, count: int, seed: int, device: torch.device, size: tuple[int, int],
                   batch: int) -> torch.Tensor:  # fmt: skip
    """`count` samples of a trained stock G in 0..1, brought to the real slices' size (bilinear) to be scored."""
    g, _ = stock_networks()
    g.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["G"])
    g = g.to(device).eval()
    z = torch.randn(count, STOCK["latent_size"], generator=torch.Generator().manual_seed(seed))
    out = torch.cat([g(z[i : i + batch].to(device)).float().cpu() for i in range(0, count, batch)])
    if tuple(out.shape[2:]) != tuple(size):
        out = torch.nn.functional.interpolate(out, size=size, mode="bilinear", align_corners=False)
    return out[:, 0].clamp(0, 1)


# --------------------------------------------------------------------------------------- evaluation


def build_extractors(names: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    from medgan.metrics.features import EXTRACTORS

    built, skipped = {}, {}
    for name in names:
        try:
            extractor = EXTRACTORS.build(name, spatial_dims=2)
        except Exception as err:  # an optional extra that is not installed: say so and go on
            skipped[name] = f"{type(err).__name__}: {err}"
            continue
        built[extractor.name] = extractor
    return built, skipped


def features_of(images: torch.Tensor, extractor, device: torch.device, batch: int) -> torch.Tensor:
    from medgan.metrics.features import FeatureAccumulator

    accumulator = FeatureAccumulator(extractor, "native", device, batch)
    for image in images:
        accumulator.add(image)
    return torch.from_numpy(accumulator.features()).to(device)


def set_metrics(real: torch.Tensor, fake: torch.Tensor, k: int, seed: int) -> dict[str, Any]:
    from medgan.metrics.distribution import frechet_distance, kid, prdc

    subset = max(2, min(real.shape[0], fake.shape[0]) // 2)
    kid_mean, kid_std = kid(real, fake, subset_size=subset, n_subsets=100, seed=seed)
    return {
        "fd": frechet_distance(real, fake),
        "kid": {"mean": kid_mean, "std": kid_std, "subset_size": subset, "subsets": 100},
        **prdc(real, fake, nearest_k=k),
        "n_real": int(real.shape[0]),
        "n_fake": int(fake.shape[0]),
    }


def diversity(images: torch.Tensor, pairs: int, seed: int, device: torch.device) -> dict[str, float]:
    from medgan.metrics.distribution import ms_ssim_diversity

    return ms_ssim_diversity(images.to(device), data_range=1.0, n_pairs=pairs, seed=seed)


def nearest_real(real: torch.Tensor, fake: torch.Tensor, real_scans: list[int], scan_names: list[str]) -> dict:
    """Each sample's nearest real slice (feature space): how many distinct slices and subjects they reach."""
    nearest = torch.cdist(fake.double(), real.double()).argmin(dim=1).cpu().numpy()
    distinct = len(set(nearest.tolist()))
    per_subject: dict[str, int] = {}
    for index in nearest:
        name = scan_names[real_scans[int(index)]]
        per_subject[name] = per_subject.get(name, 0) + 1
    counts = np.bincount(nearest, minlength=real.shape[0])
    return {
        "distinct_real_slices": distinct,
        "distinct_fraction": distinct / min(real.shape[0], fake.shape[0]),
        "most_hit_slice_share": float(counts.max() / len(nearest)),
        "samples_per_subject": dict(sorted(per_subject.items())),
    }


def progress(metrics: dict, untrained: dict | None, floor: dict) -> float | None:
    """How far FD went from the untrained generator (0) to the real/real floor (1), at the floor's N, on a log
    scale: FD spans orders of magnitude and falls most in the first steps (gross intensity statistics), so a
    linear share would read 90% after a handful of steps."""
    if not untrained:
        return None
    start, end, now = untrained["fd_matched_half"]["fd"], floor["fd_mean"], metrics["fd_matched_half"]["fd"]
    if not (start > end > 0 and now > 0):
        return None
    return math.log(start / now) / math.log(start / end)


def verdict(metrics: dict[str, Any], tag: str) -> dict[str, Any]:
    recall = metrics[tag]["recall"]
    ms = metrics["ms_ssim_diversity"]
    excess = ms["fake"]["mean"] - ms["real"]["mean"]
    spread = metrics["nearest_real"][tag]["distinct_fraction"]
    checks = {
        f"recall_{tag} > {MIN_RECALL}": recall > MIN_RECALL,
        f"fake MS-SSIM - real MS-SSIM <= {MAX_MS_SSIM_EXCESS}": excess <= MAX_MS_SSIM_EXCESS,
        f"distinct nearest real slices / min(N real, N fake) >= {MIN_DISTINCT_NEIGHBOURS}": spread
        >= MIN_DISTINCT_NEIGHBOURS,
    }
    failed = [name for name, passed in checks.items() if not passed]
    return {
        "mode_collapse": bool(failed),
        "verdict": "no mode collapse" if not failed else "mode collapse suspected: " + "; ".join(failed),
        "checks": checks,
        "values": {"recall": recall, "ms_ssim_excess": excess, "distinct_fraction": spread},
    }


def score(name: str, fake: torch.Tensor, real_feats: dict, halves, extractors: dict, real_scans: list[int],
          scan_names: list[str], args, device, real_div: dict) -> dict[str, Any]:  # fmt: skip
    """Every figure of one generated set against the real set."""
    result: dict[str, Any] = {"n_samples": int(fake.shape[0]), "nearest_real": {}}
    for tag, extractor in extractors.items():
        started = time.monotonic()
        fake_feats = features_of(fake, extractor, device, args.eval_batch)
        metrics = set_metrics(real_feats[tag], fake_feats, args.nearest_k, 0)
        half_a, half_b = halves[0]
        matched = fake_feats[: len(half_b)]
        metrics["fd_matched_half"] = {
            "fd": set_metrics(real_feats[tag][half_a], matched, args.nearest_k, 0)["fd"],
            "n_real": len(half_a),
            "n_fake": int(matched.shape[0]),
            "note": "real half A (split 0) vs the first |B| samples: compare with the real-halves floor at equal N",
        }
        metrics["seconds"] = round(time.monotonic() - started, 2)
        result[tag] = metrics
        result["nearest_real"][tag] = nearest_real(real_feats[tag], fake_feats, real_scans, scan_names)
    result["ms_ssim_diversity"] = {
        "real": real_div,
        "fake": diversity(fake[: 2 * args.diversity_pairs], args.diversity_pairs, 0, device),
    }
    log(f"{name}: " + ", ".join(f"fd_{t} {result[t]['fd']:.4g}" for t in extractors))
    return result


def evaluate(args, out: str, runs: dict[str, dict], cfg, report: dict, deadline: float | None, save) -> None:
    """Fill report['evaluation'] seed by seed, so that whatever finished is kept."""
    from medgan.inference import load_generators

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    evaluation: dict[str, Any] = {"device": str(device), "seeds": {}}
    report["evaluation"] = evaluation
    started = time.monotonic()
    dataset = _real_dataset(cfg)
    real, real_scans = real_images(dataset)
    scan_names = [os.path.basename(str(r["image"])) for r in dataset.scans.data]
    log(f"real set: {len(real)} slices of {tuple(real.shape[1:])} from {len(scan_names)} scans")
    extractors, skipped = build_extractors(args.extractors)
    evaluation.update(
        n_real=int(real.shape[0]),
        window=list(dataset.windows["image"]),
        normalisation="the trainer's window (data.window or its percentiles) -> [-1, 1], then (x + 1) / 2",
        extractors={tag: {"input_size": list(e.input_size), **e.provenance} for tag, e in extractors.items()},
        extractors_skipped=skipped,
        nearest_k=args.nearest_k,
        verdict_criteria={
            "recall_min": MIN_RECALL,
            "ms_ssim_excess_max": MAX_MS_SSIM_EXCESS,
            "distinct_nearest_fraction_min": MIN_DISTINCT_NEIGHBOURS,
            "rule": "no mode collapse when all three hold, on random_cnn features (k-NN, k = 5)",
        },
    )
    real_feats = {tag: features_of(real, e, device, args.eval_batch) for tag, e in extractors.items()}
    rng = np.random.default_rng(0)
    halves = []
    for _ in range(args.splits):
        order = rng.permutation(len(real))
        halves.append((order[: len(real) // 2], order[len(real) // 2 :]))
    floor = {}
    for tag in extractors:
        per_split = [set_metrics(real_feats[tag][a], real_feats[tag][b], args.nearest_k, 0) for a, b in halves]
        floor[tag] = {
            "fd_mean": float(np.mean([m["fd"] for m in per_split])),
            "fd_std": float(np.std([m["fd"] for m in per_split])),
            "kid_mean": float(np.mean([m["kid"]["mean"] for m in per_split])),
            **{f"{k}_mean": float(np.mean([m[k] for m in per_split])) for k in ("precision", "recall", "density",
                                                                               "coverage")},
            "n_per_half": [len(halves[0][0]), len(halves[0][1])],
            "splits": args.splits,
        }  # fmt: skip
    real_div = diversity(real[torch.from_numpy(rng.permutation(len(real))[: 2 * args.diversity_pairs])],
                         args.diversity_pairs, 0, device)  # fmt: skip
    evaluation["reference"] = {
        "real_halves": floor,
        "real_halves_note": "random halves of the real slices (adjacent slices of a subject fall in both halves, "
        "so this floor is optimistic)",
        "ms_ssim_diversity_real": real_div,
    }
    common = (real_feats, halves, extractors, real_scans, scan_names, args, device, real_div)
    figure = [real[torch.from_numpy(rng.permutation(len(real))[:8])]]
    figure_rows = ["real"]

    first_ok = next((s for s in args.seeds if runs.get(str(s), {}).get("checkpoint")), (args.seeds or [0])[0])
    untrained: dict[str, Any] = {}
    try:
        cfg0 = study_config(args.config, args.data, [*args.set], seed=first_ok)
        g0 = untrained_generator(cfg0, dataset.record, device)
        fake0 = generate(g0, dataset.record, args.samples, first_ok, device, args.gen_batch)
        del g0
        untrained = score("untrained", fake0, *common)
        untrained["verdict"] = verdict(untrained, "random_cnn") if "random_cnn" in extractors else None
        untrained["note"] = f"the generator as initialised for seed {first_ok} (step 0), the same latents drawn"
    except Exception:
        untrained = {"error": traceback.format_exc(limit=3)[-1500:]}
    evaluation["reference"]["untrained_generator"] = untrained
    save()

    def one(kind: str, seed: int, run: dict, draw: Callable[[], torch.Tensor],
            annotate: Callable[[dict], None]) -> None:  # fmt: skip
        """Score one generator into evaluation[seeds|stock][seed]; a failure is recorded and the study goes on."""
        section, stem = ("seeds", "seed") if kind == "medgan" else ("stock", "stock")
        if not run.get("checkpoint"):
            evaluation[section][str(seed)] = {"error": f"no checkpoint (training {run.get('status', 'not run')})"}
            return
        if deadline is not None and time.monotonic() > deadline:
            evaluation[section][str(seed)] = {"error": "skipped: the study's time budget was spent"}
            return
        try:
            fake = draw()
            result = score(f"{kind} seed {seed}", fake, *common)
            annotate(result)
            result["verdict"] = verdict(result, "random_cnn") if "random_cnn" in extractors else None
            figure.append(fake[:8])
            figure_rows.append(f"{kind} seed {seed}")
            if args.save_samples:
                path = os.path.join(out, f"{stem}{seed}_samples.pt")
                torch.save((fake[:64] * 255).round().to(torch.uint8), path)
                result["samples_file"] = path
            evaluation[section][str(seed)] = result
        except Exception:
            evaluation[section][str(seed)] = {"error": traceback.format_exc(limit=4)[-2000:]}
        save()  # what is done stays on disk if the suite's timer ends the study

    def draw_medgan(run: dict, seed: int) -> torch.Tensor:
        g, _, record = load_generators(run["checkpoint"], device)
        return generate(g["G"], record, args.samples, seed, device, args.gen_batch)

    def annotate_medgan(run: dict) -> Callable[[dict], None]:
        def annotate(result: dict) -> None:
            result["checkpoint"] = run["checkpoint"]
            step = re.search(r"step_(\d+)\.pt$", run["checkpoint"])
            result["checkpoint_step"] = int(step.group(1)) if step else None
            result["training_status"] = run["status"]
            for tag in extractors:
                result[tag]["fd_progress"] = progress(result[tag], untrained.get(tag), floor[tag])

        return annotate

    def annotate_stock(result: dict) -> None:
        result["note"] = f"MONAI DCGAN tutorial at {STOCK['image_size']}^2" + (
            ", upsampled (bilinear) to the real slices' size to be scored" if size != (STOCK["image_size"],) * 2 else ""
        )

    for seed in args.seeds:
        run = runs.get(str(seed), {})
        one("medgan", seed, run, lambda run=run, seed=seed: draw_medgan(run, seed), annotate_medgan(run))
    evaluation["stock"] = {}
    size = tuple(real.shape[1:])
    for seed in args.stock_seeds:
        run = report.get("stock_runs", {}).get(str(seed), {})
        one("stock", seed, run,
            lambda run=run, seed=seed: stock_generate(run["checkpoint"], args.samples, seed, device, size,
                                                      args.gen_batch),
            annotate_stock)  # fmt: skip
    if args.figure:
        write_figure(args.figure, figure)
        evaluation["figure"] = {"path": os.path.abspath(args.figure), "rows": figure_rows}
    if device.type == "cuda":
        evaluation["gpu_memory_gib_max"] = torch.cuda.max_memory_allocated(device) / 2**30
    evaluation["seconds"] = round(time.monotonic() - started, 2)


def write_figure(path: str, rows: list[torch.Tensor], per_row: int = 8, gap: int = 2) -> None:
    """A grey PNG grid: one row per set (images in 0..1), `gap` white pixels between images."""
    from medgan.io.png import encode_png

    height, width = rows[0].shape[1:]
    grid = np.full((len(rows) * (height + gap) - gap, per_row * (width + gap) - gap), 255, np.uint8)
    for r, images in enumerate(rows):
        for c, image in enumerate(images[:per_row]):
            y, x = r * (height + gap), c * (width + gap)
            grid[y : y + height, x : x + width] = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    with open(path + ".partial", "wb") as fh:
        fh.write(encode_png(grid))
    os.replace(path + ".partial", path)


def data_summary(data: str, cfg) -> dict[str, Any]:
    summary: dict[str, Any] = {"folder": os.path.abspath(data)}
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(data, "manifest.json")) as fh:
            manifest = json.load(fh)
        summary["subjects"] = [
            {k: s.get(k) for k in ("subject", "package", "version", "license", "usable_axial_slices")}
            for s in manifest.get("subjects", [])
        ]
        summary["size_mb"] = manifest.get("size_mb")
    summary.update(
        image_size=cfg.data.image_size,
        spacing_mm=cfg.data.spacing_mm,
        slice_range=list(cfg.data.slice_range),
        min_foreground_fraction=cfg.data.min_foreground_fraction,
    )
    return summary


def _cell(value: Any, spec: str, width: int) -> str:
    if value is None:
        return "-".rjust(width)
    return f"{value:{spec}}".rjust(width) if isinstance(value, (int, float)) else str(value).rjust(width)


def print_table(report: dict) -> None:
    """One line per seed (and the two reference points) on random_cnn features."""
    evaluation = report.get("evaluation", {})
    reference = evaluation.get("reference", {})
    tag = "random_cnn"
    columns = [
        ("", 10, ""),
        ("status", 7, ""),
        ("steps", 7, "d"),
        ("kimg", 6, ".1f"),
        ("ada p", 6, ".3f"),
        ("FD", 8, ".4g"),
        ("FD N/2", 8, ".4g"),
        ("to floor", 8, ".0%"),
        ("KID", 8, ".4f"),
        ("prec", 5, ".2f"),
        ("rec", 5, ".2f"),
        ("dens", 5, ".2f"),
        ("cov", 5, ".2f"),
        ("MS-SSIM", 7, ".3f"),
        ("NN", 4, "d"),
    ]
    rows = []
    if tag in reference.get("untrained_generator", {}):
        rows.append(("untrained", {}, reference["untrained_generator"]))
    for seed, run in report.get("runs", {}).items():
        rows.append((f"seed {seed}", run, evaluation.get("seeds", {}).get(seed, {})))
    for seed, run in report.get("stock_runs", {}).items():
        rows.append((f"stock {seed}", run, evaluation.get("stock", {}).get(seed, {})))
    print()
    print(" ".join(name.rjust(width) if name else " " * width for name, width, _ in columns) + "  verdict")
    for name, run, result in rows:
        kimg = run["images_seen"] / 1000 if run.get("images_seen") is not None else "-"
        values: list[Any] = [name.ljust(10), run.get("status", "-"), run.get("steps", "-"), kimg,
                             run.get("augment_p", "-")]  # fmt: skip
        if tag in result:
            m = result[tag]
            values += [
                m["fd"],
                m["fd_matched_half"]["fd"],
                m.get("fd_progress", "-"),
                m["kid"]["mean"],
                m["precision"],
                m["recall"],
                m["density"],
                m["coverage"],
                result["ms_ssim_diversity"]["fake"]["mean"],
                result["nearest_real"][tag]["distinct_real_slices"],
            ]
            v = result.get("verdict") or {}
            text = "-" if not v else ("COLLAPSE SUSPECTED" if v["mode_collapse"] else "no collapse")
        else:
            values += ["-"] * (len(columns) - len(values))
            lines = str(run.get("log_tail") or result.get("error") or "").strip().splitlines()
            text = lines[-1][:90] if lines else "-"
        print(" ".join(_cell(v, spec, w) for v, (_, w, spec) in zip(values, columns, strict=True)) + "  " + text)
    floor = reference.get("real_halves", {}).get(tag)
    if floor:
        values = ["real/real", "", "", "", "", "", floor["fd_mean"], "", floor["kid_mean"], floor["precision_mean"],
                  floor["recall_mean"], floor["density_mean"], floor["coverage_mean"],
                  reference["ms_ssim_diversity_real"]["mean"], ""]  # fmt: skip
        print(" ".join(_cell(v, spec, w) for v, (_, w, spec) in zip(values, columns, strict=True)) +
              f"  floor: random halves of the real set, {floor['n_per_half']} slices")  # fmt: skip
    t = report.get("timing", {})
    print(
        f"{tag} features (untrained, fixed seed); FD N/2: real half vs as many samples, as the floor; to floor: "
        "log-scale share of the way from the untrained generator's FD N/2 to the floor; "
        "NN: distinct nearest real slices; stock: the MONAI DCGAN tutorial (64^2, upsampled to larger real slices)"
    )
    print(f"real slices {evaluation.get('n_real')}, {report.get('samples')} samples per seed, "
          f"{report.get('device_name')}, torch {report.get('torch')}; training {t.get('train_wall_s')} s wall, "
          f"evaluation {t.get('eval_s')} s, GPU minutes {t.get('gpu_minutes')}")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from medgan.errors import MedganError
    from medgan.tasks.config import RunConfig

    began = time.monotonic()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    json_path = args.json or os.path.join(out, "small_data_study.json")
    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    args.eval_batch = args.eval_batch or (128 if cuda else 32)
    args.gen_batch = args.gen_batch or (64 if cuda else 16)
    report: dict[str, Any] = {
        "study": "small real data: default 2D config, several seeds, mode collapse and set metrics",
        "command": " ".join(sys.argv),
        "medgan_version": MEDGAN_VERSION,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device_name": torch.cuda.get_device_name() if cuda and torch.cuda.is_available() else "cpu",
        "config": args.config,
        "seeds": args.seeds,
        "minutes": args.minutes,
        "samples": args.samples,
        "user_overrides": list(args.set),
        "warnings": [],
    }
    deadline = None if args.budget_s is None else began + args.budget_s

    def write() -> None:
        report["timing"]["total_s"] = round(time.monotonic() - began, 2)
        with open(json_path + ".partial", "w") as fh:
            json.dump(report, fh, indent=2, default=float)
        os.replace(json_path + ".partial", json_path)

    report["timing"] = {}
    status = 1
    try:
        supported = "time_limit_minutes" in RunConfig.model_fields
        if not supported:
            report["warnings"].append("train.time_limit_minutes is not in this medgan: runs end at --kill-after")
        minutes = args.minutes if supported and args.minutes > 0 else None
        sets = study_overrides(os.path.abspath(args.data), minutes, args.log_every, args.checkpoint_every)
        if args.device != "auto":
            sets.append(f"train.device={args.device}")
        report["study_overrides"] = sets
        cfg = study_config(args.config, os.path.abspath(args.data), [*sets, *args.set], seed=(args.seeds or [0])[0])
        if not args.seeds and not args.stock_seeds:
            raise SystemExit("nothing to train: give --seeds, --stock-seeds or both")
        from medgan.training.build import check_network_names

        check_network_names(cfg.generator, cfg.discriminator)  # a typo fails here, not in every run
        if cfg.task != "unconditional":
            raise SystemExit(f"the study draws samples from noise: task must be unconditional, not {cfg.task}")
        report["data"] = data_summary(args.data, cfg)
        for run_dir in [*(os.path.join(out, f"seed{s}") for s in args.seeds),
                        *(os.path.join(out, f"stock{s}") for s in args.stock_seeds)]:  # fmt: skip
            if os.path.exists(run_dir):
                if not args.overwrite:
                    raise SystemExit(f"{run_dir} exists; pass --overwrite or choose another --out")
                shutil.rmtree(run_dir)
        if args.kill_after is None:
            args.kill_after = (args.minutes * 60 if minutes else 600) + args.grace_s
            if deadline is not None:
                args.kill_after = min(args.kill_after, max(30.0, args.budget_s - args.eval_reserve_s))
        train_began = time.monotonic()
        report["runs"], report["stock_runs"] = train_seeds(args, out, [*sets])
        train_wall = time.monotonic() - train_began
        report["timing"]["train_wall_s"] = round(train_wall, 2)
        write()
        eval_began = time.monotonic()
        evaluate(args, out, report["runs"], cfg, report, deadline, write)
        eval_s = time.monotonic() - eval_began
        report["timing"]["eval_s"] = round(eval_s, 2)
        report["timing"]["gpu_minutes"] = round((train_wall + eval_s) / 60, 3) if cuda else 0.0
        report["timing"]["gpu_minutes_note"] = "all seeds share one GPU: wall time of training + evaluation"
        seeds = report["evaluation"]["seeds"]
        evaluated = [s for s, r in seeds.items() if "error" not in r]
        collapsed = [s for s in evaluated if (seeds[s].get("verdict") or {}).get("mode_collapse")]
        report["summary"] = {
            "seeds_trained": sum(r["status"] == "ok" for r in report["runs"].values()),
            "seeds_evaluated": len(evaluated),
            "seeds_mode_collapse_suspected": collapsed,
            "all_seeds_without_collapse": bool(evaluated) and not collapsed and len(evaluated) == len(args.seeds),
        }
        stock = report["evaluation"].get("stock", {})
        stock_evaluated = [s for s, r in stock.items() if "error" not in r]
        report["summary"]["stock_seeds_evaluated"] = len(stock_evaluated)
        report["summary"]["stock_seeds_mode_collapse_suspected"] = [
            s for s in stock_evaluated if (stock[s].get("verdict") or {}).get("mode_collapse")
        ]
        status = 0 if evaluated or stock_evaluated else 1
    except (SystemExit, MedganError) as err:
        report["error"] = str(err)
        log(str(err))
    except Exception:
        report["error"] = traceback.format_exc(limit=6)[-3000:]
        log(report["error"])
    finally:
        write()
    print_table(report)
    print(f"wrote {json_path}")
    return status


# ================================================================================================== main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="gather and normalise the real scans (here: needs PyPI and Debian)")
    p.add_argument("--out", required=True, help="the data folder to write (replaced whole)")
    p.add_argument("--slice-mm", type=float, default=2.0, help="axial slice spacing (never finer than the scan's)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="whose slice filter counts the usable slices")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override of that config")
    p.add_argument("--only", nargs="+", help="only these subjects (for debugging)")
    r = sub.add_parser("run", help="train every seed concurrently, then evaluate (GPU or CPU)")
    r.add_argument("--data", required=True, help="the folder `prepare` wrote")
    r.add_argument("--out", required=True, help="run folders, logs and the JSON go here")
    r.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="medgan seeds (none: the stock peer only)")
    r.add_argument(
        "--stock-seeds",
        type=int,
        nargs="*",
        default=[0],
        help="seeds of the stock peer, MONAI's DCGAN tutorial, trained beside (none: leave it out)",
    )
    r.add_argument("--minutes", type=float, default=2.5, help="train.time_limit_minutes of every run (0: none)")
    r.add_argument("--device", default="cuda", choices=["auto", "cpu", "cuda"])
    r.add_argument("--config", default=DEFAULT_CONFIG)
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (after ours)")
    r.add_argument("--samples", type=int, default=500, help="samples drawn from each final generator")
    r.add_argument("--json", help="default: OUT/small_data_study.json")
    r.add_argument("--extractors", nargs="+", default=["random_cnn", "efficientnet_lite0"])
    r.add_argument("--nearest-k", type=int, default=5)
    r.add_argument("--diversity-pairs", type=int, default=100)
    r.add_argument("--splits", type=int, default=5, help="random halves of the real set for the FD floor")
    r.add_argument("--log-every", type=int, default=25)
    r.add_argument("--checkpoint-every", type=int, default=500, help="fallback checkpoints (a killed run)")
    r.add_argument("--kill-after", type=float, help="seconds before unfinished runs are killed "
                   "(default: minutes + grace)")  # fmt: skip
    r.add_argument("--grace-s", type=float, default=60.0, help="start-up and final checkpoint, beyond --minutes")
    r.add_argument("--budget-s", type=float, help="whole study; training is cut to leave --eval-reserve-s")
    r.add_argument("--eval-reserve-s", type=float, default=40.0)
    r.add_argument("--eval-batch", type=int, help="feature extraction batch (default 128 on CUDA, 32 on the CPU)")
    r.add_argument("--gen-batch", type=int, help="generator batch (default 64 on CUDA, 16 on the CPU)")
    r.add_argument("--save-samples", action="store_true", help="keep 64 samples per seed as uint8 tensors")
    r.add_argument("--figure", help="a PNG: 8 real slices, then the first 8 samples of every seed, a row each")
    r.add_argument("--overwrite", action="store_true", help="replace seed folders left by an earlier run")
    t = sub.add_parser("stock", help="(started by run) train the stock peer, MONAI's DCGAN tutorial, once")
    t.add_argument("--data", required=True)
    t.add_argument("--config", default=DEFAULT_CONFIG, help="whose dataset code and window give the real slices")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--out", required=True, help="its run folder: generator.pt, stats.jsonl, summary.json")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--minutes", type=float, required=True, help="training time, from the start of the process")
    t.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.command == "prepare":
        return prepare(args)
    if args.command == "stock":
        return stock_train(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
