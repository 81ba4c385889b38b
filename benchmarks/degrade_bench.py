"""Throughput of the degradation simulators: 512 x 512 slices and 256 x 256 x 128 volumes per second, per kind.

    python benchmarks/degrade_bench.py                      # CPU, and CUDA when there is a GPU
    python benchmarks/degrade_bench.py --device cpu --kinds ct-lowdose mr-noise --json out.json

Inputs are synthetic but realistic in size and values (a water-and-bone body in HU for CT, a bright
blob on a dark background for MR); each kind runs with its defaults at severity 0.5 (resolution kinds
on their own output grid). Timing covers drawing the records and applying them, after one warm-up
call, synchronised on CUDA; the figure is the median of `--repeats` runs (fewer for kinds that take
more than 10 s a run, whose first run counts). On the CPU, ct-lowdose is compared with its peer: the same
pipeline written with scikit-image's `radon` and `iradon` (one 512 x 512 slice, 360 views).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medgan.data.degradations import DEGRADATIONS


def body(shape: tuple[int, ...], kind: str, device: str) -> torch.Tensor:
    """[1, 1, *shape]: an ellipse of soft tissue with a bone ring in air (HU), or an MR-like blob."""
    axes = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = sum(a**2 for a in axes[:2]) + (sum(a**2 for a in axes[2:]) * 0.3 if len(shape) == 3 else 0)
    texture = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    if kind.startswith("ct-"):
        image = torch.full(shape, -1000.0)
        image[radius < 0.8] = 40.0 + 20.0 * texture[radius < 0.8]
        image[(radius > 0.7) & (radius < 0.8)] = 900.0
    else:
        image = (radius < 0.7) * (300.0 + 100.0 * texture)
    return image[None, None].to(device)


def time_kind(kind: str, shape: tuple[int, ...], batch: int, spacing: tuple[float, ...], device: str, repeats: int):
    degradation = DEGRADATIONS.build(kind)
    x = body(shape, kind, device).repeat(batch, 1, *([1] * len(shape)))

    def run() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        records = degradation.sample(batch, 0, spacing_mm=spacing)
        degradation.apply(x, records, spacing)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    first = run()  # warm-up (allocations, FFT plans, kernels); a slow first run counts, its overhead is noise
    times = [first] if first > 10.0 else []
    times += [run() for _ in range(min(repeats, max(1, int(30.0 / first))) - len(times))]
    seconds = statistics.median(times)
    return {"kind": kind, "shape": list(shape), "batch": batch, "seconds": seconds, "per_second": batch / seconds}


def skimage_lowdose(plane_hu, dose: float, views: int, spacing_mm: float, seed: int = 0):
    """The peer: the same low-dose pipeline written with scikit-image's radon and iradon (numpy, one slice),
    noisy reconstruction minus noise-free reconstruction added to the image, as ct-lowdose does."""
    import numpy as np
    from skimage.transform import iradon, radon

    mu = np.clip(0.0193 * (1 + plane_hu / 1000.0), 0, None)
    theta = np.arange(views) * 180.0 / views
    sinogram = radon(mu, theta, circle=False) * spacing_mm
    flux = 1e5 * dose * spacing_mm * (1000 / views)
    counts = np.random.default_rng(seed).poisson(flux * np.exp(-sinogram)).clip(1, None)
    noise = np.log(flux / counts) - sinogram
    size = plane_hu.shape[0]
    image = iradon(noise / spacing_mm, theta, output_size=size, filter_name="shepp-logan", circle=False)
    return plane_hu + image * 1000 / 0.0193


def time_peer(shape: tuple[int, int], spacing: float) -> dict:
    """Slices per second of the scikit-image peer at ct-lowdose's default views (best of two)."""
    plane = body(shape, "ct-lowdose", "cpu")[0, 0].numpy().astype("float64")
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        skimage_lowdose(plane, 0.25, 360, spacing)
        seconds.append(time.perf_counter() - start)
    return {"kind": "ct-lowdose (scikit-image radon + iradon)", "shape": list(shape), "batch": 1,
            "seconds": min(seconds), "per_second": 1 / min(seconds), "device": "cpu", "unit": "slices"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--kinds", nargs="*", default=DEGRADATIONS.names())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slice-batch", type=int, default=0, help="2D batch (default: 4 on CPU, 32 on CUDA)")
    parser.add_argument("--no-volumes", action="store_true", help="only the 2D slices")
    parser.add_argument("--no-peer", action="store_true", help="skip the scikit-image low-dose peer (CPU)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # on a busy machine one thread avoids waiting for a descheduled one
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    results = []
    for device in devices:
        name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
        print(f"# {device}: {name}, torch {torch.__version__}, {torch.get_num_threads()} threads")
        batch = args.slice_batch or (32 if device == "cuda" else 4)
        for kind in args.kinds:
            cases = [((512, 512), batch, (0.7, 0.7), "slices")]
            if not args.no_volumes:
                cases.append(((256, 256, 128), 1, (0.9, 0.9, 1.5), "volumes"))
            for shape, size, spacing, unit in cases:
                result = time_kind(kind, shape, size, spacing, device, args.repeats)
                result.update(device=device, unit=unit, device_name=name)
                results.append(result)
                dims = "x".join(map(str, shape))
                print(f"{device:5s} {kind:15s} {dims:>12s} x{size:<3d} {result['per_second']:9.2f} {unit}/s "
                      f"({result['seconds']:.3f} s a batch)", flush=True)  # fmt: skip
    if "cpu" in devices and "ct-lowdose" in args.kinds and not args.no_peer:
        peer = time_peer((512, 512), 0.7)
        results.append(peer)
        ours = next(r for r in results if r["kind"] == "ct-lowdose" and r["device"] == "cpu" and r["unit"] == "slices")
        print(f"cpu   peer: scikit-image radon + iradon, 512x512 x1 {peer['per_second']:9.2f} slices/s; "
              f"ct-lowdose is {ours['per_second'] / peer['per_second']:.1f}x its speed", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
