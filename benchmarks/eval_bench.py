"""Evaluation speed: feature extraction plus every distribution metric, and FD on precomputed features.

    python benchmarks/eval_bench.py                          # CPU: 1,000 + 1,000 images, 256 x 256
    python benchmarks/eval_bench.py --device cuda            # GPU: 10,000 + 10,000 images (bf16 autocast)
    python benchmarks/eval_bench.py --extractor efficientnet_lite0 --json out.json

Part 1 scores a "fake" set against a "real" one, both N CT-like slices of 256 x 256 in HU (procedural
phantoms, each drawn once and varied by flips, shifts and noise, so generating them costs little):
window to [0, 1], resize, extract features in batches, then FD, KID (100 subsets of 1,000),
precision/recall/density/coverage (k = 5). It prints images/s for extraction alone and for the
whole pass.

Part 2 times the Fréchet distance on 10,000 precomputed 2048-d feature vectors per set on the
CPU, against its peer: the plain formula with scipy.linalg.sqrtm (as pytorch-fid writes it),
checking that both agree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import scipy.linalg
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from medgan.data.phantoms import PHANTOMS
from medgan.metrics.distribution import frechet_distance, kid, prdc
from medgan.metrics.features import EXTRACTORS, FeatureAccumulator
from medgan.metrics.sets import CT_WINDOW_HU, Window

DISTINCT_PHANTOMS = 64


def image_stream(n: int, seed: int, side: int):
    """n float32 HU slices of side x side: a few phantoms, each varied by flips, shifts and noise."""
    rng = np.random.default_rng(seed)
    bases = [
        PHANTOMS.build("ct_body", spatial_dims=2, seed=seed * 1000 + i, shape=(side, side))[0].numpy()
        for i in range(min(n, DISTINCT_PHANTOMS))
    ]
    for i in range(n):
        image = bases[i % len(bases)].astype(np.float32)
        if rng.random() < 0.5:
            image = image[::-1]
        image = np.roll(image, tuple(rng.integers(-8, 9, 2)), axis=(0, 1))
        yield image + rng.normal(0, 10, image.shape).astype(np.float32)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def score_sets(n: int, side: int, extractor_name: str, device: str, batch_size: int) -> dict:
    window = Window(*CT_WINDOW_HU, "CT default")
    extractor = EXTRACTORS.build(extractor_name, spatial_dims=2)
    warm = FeatureAccumulator(extractor, device=device, batch_size=batch_size)
    for image in image_stream(batch_size, 99, side):  # first-call costs (kernels, allocator) out of the timing
        warm.add(window.apply(image))
    warm.features()
    images = {role: list(image_stream(n, seed, side)) for role, seed in (("real", 1), ("fake", 2))}
    sync(device)
    start = time.perf_counter()
    features = {}
    for role, stack in images.items():
        accumulator = FeatureAccumulator(extractor, device=device, batch_size=batch_size)
        for image in stack:
            accumulator.add(torch.from_numpy(window.apply(image)))
        features[role] = torch.from_numpy(accumulator.features()).to(device)
    sync(device)
    extract_s = time.perf_counter() - start
    timings = {}
    for name, metric in (
        ("fd", lambda: frechet_distance(features["real"], features["fake"])),
        ("kid", lambda: kid(features["real"], features["fake"], subset_size=1000, n_subsets=100)),
        ("prdc", lambda: prdc(features["real"], features["fake"], nearest_k=5)),
    ):
        start = time.perf_counter()
        value = metric()
        sync(device)
        timings[name] = {"seconds": time.perf_counter() - start, "value": value}
    total_s = extract_s + sum(t["seconds"] for t in timings.values())
    return {
        "images": 2 * n,
        "side": side,
        "extractor": extractor_name,
        "feature_dim": int(features["real"].shape[1]),
        "extract_seconds": extract_s,
        "extract_images_per_s": 2 * n / extract_s,
        "metrics": timings,
        "total_seconds": total_s,
        "total_images_per_s": 2 * n / total_s,
    }


def fd_reference(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))


def fd_on_features(n: int, dims: int, peer: bool) -> dict:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(dims, dims)).astype(np.float32) / np.sqrt(dims)
    real = np.maximum(rng.normal(size=(n, dims)).astype(np.float32) @ mixing, 0)  # ReLU-like, correlated
    fake = np.maximum((rng.normal(size=(n, dims)).astype(np.float32) * 1.1 + 0.05) @ mixing, 0)
    start = time.perf_counter()
    value = frechet_distance(real, fake)
    ours = time.perf_counter() - start
    result = {"samples": n, "dims": dims, "medgan_seconds": ours, "fd": value}
    if peer:
        start = time.perf_counter()
        expected = fd_reference(real.astype(np.float64), fake.astype(np.float64))
        result.update(
            scipy_sqrtm_seconds=time.perf_counter() - start,
            scipy_fd=expected,
            relative_difference=abs(value - expected) / abs(expected),
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, help="images per set (default: 10,000 on CUDA, 1,000 on the CPU)")
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--extractor", default="random_cnn")
    parser.add_argument("--batch-size", type=int, help="default: 256 on CUDA, 32 on the CPU")
    parser.add_argument("--fd-samples", type=int, default=10_000)
    parser.add_argument("--fd-dims", type=int, default=2048)
    parser.add_argument("--no-peer", action="store_true", help="skip the scipy sqrtm peer (about 15 s)")
    parser.add_argument("--skip-sets", action="store_true")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    n = args.images or (10_000 if cuda else 1_000)
    batch = args.batch_size or (256 if cuda else 32)
    report = {
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }
    if not args.skip_sets:
        sets = score_sets(n, args.side, args.extractor, args.device, batch)
        report["sets"] = sets
        print(
            f"{sets['images']} images {args.side}x{args.side} on {report['device']}, {args.extractor} "
            f"({sets['feature_dim']}-d), batch {batch}"
        )
        print(f"  extraction        {sets['extract_seconds']:8.2f} s   {sets['extract_images_per_s']:8.1f} images/s")
        for name, timing in sets["metrics"].items():
            print(f"  {name:17s} {timing['seconds']:8.2f} s")
        print(f"  whole pass        {sets['total_seconds']:8.2f} s   {sets['total_images_per_s']:8.1f} images/s")
    fd = fd_on_features(args.fd_samples, args.fd_dims, peer=not args.no_peer)
    report["fd_features"] = fd
    print(f"FD on {fd['samples']} x {fd['dims']} features per set (CPU): medgan {fd['medgan_seconds']:.2f} s", end="")
    if "scipy_sqrtm_seconds" in fd:
        ratio = fd["scipy_sqrtm_seconds"] / fd["medgan_seconds"]
        print(
            f", scipy sqrtm {fd['scipy_sqrtm_seconds']:.2f} s ({ratio:.1f}x slower), "
            f"relative difference {fd['relative_difference']:.1e}"
        )
    else:
        print()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2, default=float)


if __name__ == "__main__":
    main()
