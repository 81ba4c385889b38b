"""Whole-scan inference speed: `medgan enhance`'s sliding-window path against MONAI's `sliding_window_inference`.

    python benchmarks/enhance_bench.py                               # GPU: 512 x 512 x 256, fp32 and bf16
    python benchmarks/enhance_bench.py --device cpu --size 192 192 96 # CPU: a size that finishes in minutes
    python benchmarks/enhance_bench.py --json out.json

Both run one network, a 3-level MONAI U-Net (channels 16, 32, 64, two residual units per level), over the
same random volume with 96^3 windows, overlap 0.5, Gaussian blending (MONAI's `mode="gaussian"`) and the
same number of windows per network call. Rounds alternate between the contenders (in turn forwards and
backwards); each contender's median and best seconds per volume are reported with their ratio to MONAI's
(medians, and the best of each, which a busy machine disturbs least), and the maximum absolute difference
from MONAI's output at the same precision; a difference beyond rounding fails the run.

Contenders on a GPU, each at fp32 and at bf16 (autocast for both):
  monai            `sliding_window_inference` on the volume already on the GPU, output left there
  medgan           `blend_windows` (the engine under `apply_to_scan`) on the same, output left there
  medgan_cl        the same with channels-last windows and weights (bf16 only)
  *_host           from a CPU volume to a CPU result, as `medgan enhance` runs (MONAI: copy in, copy out)
  medgan_streamed  the scan and the output kept on the CPU, windows streamed to the GPU (bf16): the path for
                   volumes larger than the GPU's memory
`--network affine` swaps the U-Net for a per-voxel map, leaving the window machinery alone to time.
On the CPU: monai and medgan at fp32 (and bf16 with --precision fp32 bf16 where the CPU runs it).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from medgan.inference.whole_scan import apply_to_scan, blend_windows, to_channels_last

TOLERANCE = {"fp32": 1e-2, "bf16": 5e-2}  # of the largest output value


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else platform.processor() or 'CPU'} ({os.cpu_count()} cores)"


class Affine(torch.nn.Module):
    """A per-voxel map with no cost of its own: what is left is the sliding-window machinery."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x - 0.5


def network(channels: list[int], device: torch.device, kind: str = "unet") -> torch.nn.Module:
    if kind == "affine":
        return Affine()
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=channels, strides=[2] * (len(channels) - 1),
               num_res_units=2)  # fmt: skip
    return net.to(device).eval().requires_grad_(False)


def contenders(args, net, volume_cpu, device):
    """name -> (precision, zero-argument function returning the output on the CPU or the device)."""
    window, batch, overlap = [args.window] * 3, args.batch, args.overlap
    volume = volume_cpu.to(device)
    fast = to_channels_last(copy.deepcopy(net), 3) if device.type == "cuda" else None

    def monai(precision: str, host: bool):
        def call():
            x = volume_cpu.to(device) if host else volume
            with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                y = sliding_window_inference(x, window, batch, net, overlap=overlap, mode="gaussian")
            return y.cpu() if host else y

        return call

    def medgan(precision: str, host: bool = False, channels_last: bool = False, streamed: bool = False):
        model = fast if channels_last else net

        def call():
            if host or streamed:
                memory = 0 if streamed else None
                scan = {"image": volume_cpu[0]}
                y = apply_to_scan(lambda w: model(w["image"]), scan, 3, window, overlap=overlap, batch_size=batch,
                                  device=device, precision=precision, memory_bytes=memory)  # fmt: skip
                return y[None]
            return blend_windows(volume, window, model, overlap, batch, device, precision=precision,
                                 channels_last=channels_last, to_cpu=False)  # fmt: skip

        return call

    out = {}
    for precision in args.precision:
        out[f"monai_{precision}"] = (precision, monai(precision, False))
        out[f"medgan_{precision}"] = (precision, medgan(precision))
        if device.type == "cuda":
            out[f"monai_host_{precision}"] = (precision, monai(precision, True))
            out[f"medgan_host_{precision}"] = (precision, medgan(precision, host=True))
            if precision == "bf16":
                out[f"medgan_cl_{precision}"] = (precision, medgan(precision, channels_last=True))
                out[f"medgan_streamed_{precision}"] = (precision, medgan(precision, streamed=True))
    return out


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if cuda else "cpu")
    parser.add_argument("--size", type=int, nargs=3, default=None, help="volume in voxels (default 512 512 256)")
    parser.add_argument("--window", type=int, default=96, help="window side in voxels")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=8, help="windows per network call, for both")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64], help="U-Net channels per level")
    parser.add_argument("--network", choices=["unet", "affine"], default="unet",
                        help="affine: a per-voxel map, not the U-Net: times the window machinery alone")  # fmt: skip
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], help="default: both on a GPU, fp32 on CPU")
    parser.add_argument("--repeats", type=int, default=5, help="alternating timed rounds (medians reported)")
    parser.add_argument("--budget-s", type=float, default=0, help="stop adding rounds after this many seconds")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    device = torch.device(args.device)
    args.size = args.size or [512, 512, 256]
    args.precision = args.precision or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
    started = time.perf_counter()
    net = network(args.channels, device, args.network)
    volume = torch.randn(1, 1, *args.size, generator=torch.Generator().manual_seed(1))
    runs = contenders(args, net, volume, device)

    outputs, times = {}, {name: [] for name in runs}
    for name, (_, call) in runs.items():  # warm-up: cuDNN tuning, allocator, pinned memory; and the outputs
        outputs[name] = call().float()
        sync(device)
        print(f"[warm] {name}", file=sys.stderr)
    for round_ in range(args.repeats):
        order = list(runs) if round_ % 2 == 0 else list(reversed(runs))  # no contender always first
        for name in order:
            sync(device)
            begin = time.perf_counter()
            runs[name][1]()
            sync(device)
            times[name].append(time.perf_counter() - begin)
        print(f"[round {round_ + 1}] " + " ".join(f"{n}={t[-1]:.3f}" for n, t in times.items()), file=sys.stderr)
        if args.budget_s and time.perf_counter() - started > args.budget_s:
            break

    rows = {}
    for name, (precision, _) in runs.items():
        reference = outputs[f"monai_{precision}"].to(outputs[name].device)
        peer = ("monai_host_" if "_host_" in name else "monai_") + precision
        seconds, best = statistics.median(times[name]), min(times[name])
        rows[name] = {
            "precision": precision,
            "seconds_per_volume": seconds,
            "best_seconds": best,
            "speed_vs_monai": statistics.median(times[peer]) / seconds,
            "best_speed_vs_monai": min(times[peer]) / best,
            "max_abs_diff_vs_monai": float((outputs[name] - reference).abs().max()),
            "rounds": len(times[name]),
        }
    print(f"{'contender':22s} {'s/volume':>9s} {'vs MONAI':>9s} {'best s':>8s} {'vs MONAI':>9s} {'max |diff|':>11s}")
    for name, row in rows.items():
        print(f"{name:22s} {row['seconds_per_volume']:9.3f} {row['speed_vs_monai']:8.2f}x {row['best_seconds']:8.3f} "
              f"{row['best_speed_vs_monai']:8.2f}x {row['max_abs_diff_vs_monai']:11.3g}")  # fmt: skip
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "size": args.size,
        "window": args.window,
        "overlap": args.overlap,
        "batch": args.batch,
        "network": "3-level MONAI UNet" if args.network == "unet" else "per-voxel affine map",
        "channels": args.channels,
        "contenders": rows,
    }
    # Misplaced or unweighted windows differ by the output's own scale; rounding (tf32 convolutions, bf16)
    # by far less. A contender outside this bound computed something else: the run fails.
    scale = {precision: float(outputs[f"monai_{precision}"].abs().max()) for precision in args.precision}
    wrong = [
        n for n, r in rows.items() if r["max_abs_diff_vs_monai"] > TOLERANCE[r["precision"]] * scale[r["precision"]]
    ]
    result["wrong_outputs"] = wrong
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    if wrong:
        sys.exit(f"outputs differ from MONAI's beyond rounding: {', '.join(wrong)}")


if __name__ == "__main__":
    main()
