"""Load one DICOM series three ways, in one process, and print the times and their ratios.

    python benchmarks/io_bench.py                      # the real InVesalius head CT, ~100 slices
    python benchmarks/io_bench.py --series DIR         # any folder holding one series
    python benchmarks/io_bench.py --json out.json

Contenders, each timed from "here is a folder" to "here is the sorted volume in HU":
  medgan     medgan.io.read_image(folder)
  sitk       SimpleITK: ImageSeriesReader.GetGDCMSeriesFileNames + Execute (C++, GDCM)
  pydicom    a plain loop: dcmread every file, sort by position along the normal, stack
             pixel_array * slope + intercept

The voxels of all three are checked to be identical before anything is timed. Files are read
from the page cache (each contender reads the series once untimed first), so the figures
measure parsing and decoding, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import pydicom
import SimpleITK as sitk

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def load_medgan(folder: str) -> np.ndarray:
    from medgan.io import read_image

    return read_image(folder)[0].numpy()


def load_sitk(folder: str) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    return sitk.GetArrayFromImage(reader.Execute()).transpose(2, 1, 0)  # (k, j, i) -> (i, j, k)


def load_pydicom(folder: str) -> np.ndarray:
    datasets = [pydicom.dcmread(os.path.join(folder, name)) for name in os.listdir(folder)]
    iop = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    datasets.sort(key=lambda ds: float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal)))
    slices = [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets]
    return np.stack(slices, axis=-1).transpose(1, 0, 2)  # (rows, cols, k) -> (i, j, k)


CONTENDERS = {"medgan": load_medgan, "sitk": load_sitk, "pydicom": load_pydicom}


def time_all(folder: str, repeats: int) -> dict[str, list[float]]:
    """Interleave the contenders so that drift in machine load hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for _ in range(repeats):
        for name, load in CONTENDERS.items():
            start = time.perf_counter()
            load(folder)
            times[name].append(time.perf_counter() - start)
    return times


def default_series() -> str:
    from external import real_series  # tests/external.py: fetches the Debian package, caches the series

    return str(real_series("axial_full").folder)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", help="folder holding one DICOM series (default: the InVesalius head CT)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    folder = args.series or default_series()
    n_files = len(os.listdir(folder))

    volumes = {name: load(folder) for name, load in CONTENDERS.items()}  # also warms the page cache
    reference = volumes["medgan"]
    for name, volume in volumes.items():
        if volume.shape != reference.shape or not np.array_equal(volume, reference):
            raise SystemExit(f"{name} read different voxels ({volume.shape} vs {reference.shape}); not timing")

    times = time_all(folder, args.repeats)
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "series": folder,
        "files": n_files,
        "shape": list(reference.shape),
        "repeats": args.repeats,
        "median_s": median,
        "best_s": {name: min(values) for name, values in times.items()},
        "speedup_vs": {name: median[name] / median["medgan"] for name in CONTENDERS if name != "medgan"},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "versions": {"SimpleITK": sitk.Version_VersionString(), "pydicom": pydicom.__version__},
    }
    print(f"series: {folder} ({n_files} files, volume {'x'.join(map(str, reference.shape))})")
    print(f"{'reader':10s} {'median ms':>10s} {'best ms':>10s} {'files/s':>10s}")
    for name in CONTENDERS:
        print(
            f"{name:10s} {1000 * median[name]:10.1f} {1000 * result['best_s'][name]:10.1f} "
            f"{n_files / median[name]:10.0f}"
        )
    for name, ratio in result["speedup_vs"].items():
        print(f"medgan is {ratio:.2f}x as fast as {name} (median time ratio {name}/medgan)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
