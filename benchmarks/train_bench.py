"""medgan's trainer against a plain MONAI-tutorial training loop on the same pix2pix networks.

    python benchmarks/train_bench.py                       # GPU: 2D 256x256 batch 16, 3D 96^3 batch 4
    python benchmarks/train_bench.py --device cpu          # CPU: 2D 32x32 batch 4, 3D 32^3 batch 2
    python benchmarks/train_bench.py --compile --json out.json --peak-tflops 790

Networks: medgan's default pix2pix pair, `unet` (in 1, out 1 channel) and `patchgan` (in 2),
built by medgan's network recipe (`build_task_networks`) from the same seed for every contender.
Data: phantom CT slices/volumes and noisy copies (`write_phantom_pairs`), preprocessed once into the
dataset medgan's trainer builds from the same config, which the plain loops read.

Contenders:
  plain           a MONAI-tutorial loop: DataLoader(shuffle=True), fp32, eager, BCE-with-logits +
                  100 x L1, Adam, `loss.item()` every step, D's gradients computed in the G phase too
  plain_tuned     the same loop with TF32, cuDNN autotuning, bf16 autocast and channels-last switched
                  on by hand (GPU only)
  medgan          `medgan.training.train` with its default settings for the device (bf16, channels-last
                  and fused Adam on a GPU; fp32 and fused Adam on the CPU)
  medgan_compile  the same with torch.compile, as configs/pix2pix_256.yaml trains (GPU; `--compile` on the CPU)

Each contender runs `--warmup` steps untimed, then `--steps` timed steps; contenders alternate over
`--repeats` rounds and the median of each is reported, so drift in machine load hits all alike.
Model TFLOP/s counts 3 G + 8 D forward FLOPs per sample (G forward and backward; D on real and
fake with weight gradients, then on fake for the generator without them), from
`medgan.models.describe`, the same count for every contender.

`--defaults` adds medgan's own default GPU networks, trained as configs/synth2d_256.yaml trains them
(StyleGAN-style generator and residual discriminator at 256x256, batch 32, bf16, channels-last,
compiled, lazy R1, ADA), with no stock peer: its model TFLOP/s against the device's measured bf16 peak.

`--cpu-precision` (CPU) trains configs/synth2d_64.yaml's networks and settings at 64x64, batch 16, in fp32
and in bf16, alternating: whether bf16 autocast pays on this CPU, and what `train.precision: auto` picks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

SIZES = {"cuda": {"2d": ([256, 256], 16), "3d": ([96, 96, 96], 4)}, "cpu": {"2d": ([32, 32], 4), "3d": ([32] * 3, 2)}}


def make_pairs(folder: str, size: list[int]) -> str:
    """Phantom CT images of exactly `size` voxels and noisy copies; returns their CSV."""
    from medgan.data.phantom_pairs import write_phantom_pairs

    dims = len(size)
    spacing = [256.0 / size[0]] * 2 + ([256.0 / size[2]] if dims == 3 else [])
    return write_phantom_pairs(folder, count=4 if dims == 2 else 2, spatial_dims=dims, shape=size, spacing_mm=spacing)


def trainer_config(csv: str, size: list[int], batch: int, steps: int, warmup: int, device: torch.device,
                   compile_networks: bool, config: str | None = None, extra: tuple[str, ...] = ()):  # fmt: skip
    """The run config medgan trains with: without `config`, the pix2pix pair every contender trains; with it,
    that config's own networks and settings. `extra`: further overrides."""
    from medgan.config import load_config
    from medgan.training import TrainConfig

    window = "[-1000.0, 1000.0]"
    overrides = [
        f"data.source={csv}", f"data.spatial_dims={len(size)}", f"data.image_size={size}", f"data.window={window}",
        "data.min_foreground_fraction=0.0", f"data.num_workers={2 if device.type == 'cuda' else 0}",
        "data.cache=memory", "data.spacing_mm=null",
        f"train.steps={warmup + steps}", f"train.batch_size={batch}", f"train.log_every_steps={warmup}",
        f"train.sample_every_steps={warmup + steps}", f"train.checkpoint_every_steps={warmup + steps}",
        f"train.device={device.type}", f"train.compile={str(compile_networks).lower()}", "train.tensorboard=false",
        "train.num_samples=2",
    ]  # fmt: skip
    if config is None:
        overrides += [
            "task=pix2pix", f"data.source_window={window}", "generator.name=unet", "discriminator.name=patchgan",
            "optim.betas=[0.5,0.999]", "train.ema_halflife_images=0", "train.ema_rampup_ratio=null",
        ]  # fmt: skip
    return load_config(TrainConfig, config, overrides + list(extra))


def make_data(cfg):
    """The training set exactly as medgan's trainer builds it from `cfg` (preprocessed once, in memory)."""
    from medgan.tasks import TASKS
    from medgan.training.build import build_dataset

    return build_dataset(cfg.data, TASKS.get(cfg.task), "")


def networks(cfg, record: dict, device: torch.device):
    """G and D as medgan's trainer initialises them (same recipe, same seed), for every contender."""
    from medgan.tasks.networks import build_task_networks

    torch.manual_seed(cfg.seed)
    nets = build_task_networks(cfg, record, batch_size=cfg.train.batch_size)
    return nets["G"].to(device), nets["D"].to(device)


class Pairs(torch.utils.data.Dataset):
    """The shared dataset as a tutorial would index it: one random slab/crop seed per item."""

    def __init__(self, data):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.data[(i, i)]


def plain_loop(cfg, data, steps: int, warmup: int, device: torch.device, tuned: bool) -> float:
    """samples/s of a MONAI-tutorial pix2pix loop (optionally with TF32, bf16 and channels-last by hand)."""
    dims, batch = cfg.data.spatial_dims, cfg.train.batch_size
    g, d = networks(cfg, data.record, device)
    layout = (torch.channels_last if dims == 2 else torch.channels_last_3d) if tuned else torch.contiguous_format
    g, d = g.to(memory_format=layout), d.to(memory_format=layout)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tuned
    torch.backends.cudnn.benchmark = tuned  # a tutorial leaves cuDNN's default; medgan's run may have set it
    g_opt = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(Pairs(data), batch_size=batch, shuffle=True, drop_last=True)
    autocast = (lambda: torch.autocast(device.type, torch.bfloat16)) if tuned else contextlib.nullcontext

    def bce(logits, target: float):
        return sum(F.binary_cross_entropy_with_logits(t, torch.full_like(t, target)) for t in logits) / len(logits)

    done, epoch_loss, start = 0, 0.0, None
    while done < warmup + steps:
        for item in loader:
            if done == warmup:
                _sync(device)
                start = time.perf_counter()
            if done == warmup + steps:
                break
            source = item["source"].to(device).contiguous(memory_format=layout)
            target = item["image"].to(device).contiguous(memory_format=layout)
            with autocast():
                fake = g(source)
                d_opt.zero_grad()
                loss_d = 0.5 * (bce(d(torch.cat([source, target], 1)), 1.0)
                                + bce(d(torch.cat([source, fake.detach()], 1)), 0.0))  # fmt: skip
            loss_d.backward()
            d_opt.step()
            g_opt.zero_grad()
            with autocast():
                loss_g = bce(d(torch.cat([source, fake], 1)), 1.0) + 100.0 * F.l1_loss(fake, target)
            loss_g.backward()
            g_opt.step()
            epoch_loss += loss_g.item()  # what the tutorials print each epoch
            done += 1
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def medgan_trainer(csv: str, size: list[int], batch: int, steps: int, warmup: int, device: torch.device,
                   compile_networks: bool, folder: str, config: str | None = None,
                   extra: tuple[str, ...] = ()) -> tuple[float, dict]:  # fmt: skip
    """samples/s of `medgan.training.train` over the timed intervals (its own stats.jsonl).

    Without `config`: the pix2pix pair every contender trains; with it: that config's own networks and settings.
    """
    from medgan.training import train

    cfg = trainer_config(csv, size, batch, steps, warmup, device, compile_networks, config, extra)
    run = train(cfg, run_dir=folder)
    with open(os.path.join(run, "stats.jsonl")) as fh:
        records = [json.loads(line) for line in fh][1:]  # the intervals after the warm-up
    seconds = sum(warmup * batch / r["samples_per_s"] for r in records)
    from medgan.training.precision import resolve_precision

    channels_last = device.type == "cuda" if cfg.train.channels_last == "auto" else cfg.train.channels_last
    settings = {"precision": resolve_precision(cfg.train.precision, device), "channels_last": channels_last,
                "compile": compile_networks, "fused_adam": True, "config": config or "pix2pix defaults"}  # fmt: skip
    memory = max((r.get("gpu_memory_gib", 0.0) for r in records), default=0.0)
    return len(records) * warmup * batch / seconds, {**settings, "gpu_memory_gib": memory}


def default_networks(device: torch.device, steps: int, warmup: int, peak: float | None, folder: str) -> dict:
    """medgan's own default 2D networks, trained as configs/synth2d_256.yaml trains them: samples/s, TFLOP/s."""
    from medgan.config import load_config
    from medgan.models import describe
    from medgan.training import TrainConfig

    config = "configs/synth2d_256.yaml"
    cfg = load_config(TrainConfig, config, [])
    size, batch = cfg.data.image_size, cfg.train.batch_size
    if device.type == "cpu":
        size, batch = [32, 32], 4
    csv = make_pairs(os.path.join(folder, "images"), size)
    compile_networks = cfg.train.compile and device.type == "cuda"
    run_cfg = trainer_config(csv, size, batch, steps, warmup, device, compile_networks, config=config)
    g, d = networks(run_cfg, make_data(run_cfg).record, torch.device("cpu"))
    flops = 3 * describe(g, (1, g.latent_dim))["flops_per_sample"] + 8 * describe(d, (1, 1, *size))["flops_per_sample"]
    del g, d
    rate, settings = medgan_trainer(csv, size, batch, steps, warmup, device, compile_networks,
                                    os.path.join(folder, "run"), config=config)  # fmt: skip
    entry = {"config": config, "size": size, "batch": batch, "generator": cfg.generator.name,
             "discriminator": cfg.discriminator.name, "samples_per_s": rate, "train_flops_per_sample": flops,
             "tflops": rate * flops / 1e12, "medgan_settings": settings,
             "note": "lazy R1 and ADA run as configured; their FLOPs are not counted"}  # fmt: skip
    if peak:
        entry["fraction_of_peak"] = entry["tflops"] / peak
    share = f"  {entry['fraction_of_peak']:.1%} of peak" if peak else ""
    print(f"default networks ({cfg.generator.name} + {cfg.discriminator.name}) {size[0]}x{size[1]} batch {batch}: "
          f"{rate:.1f} samples/s  {entry['tflops']:.3f} model TFLOP/s{share}")  # fmt: skip
    return entry


def cpu_precision(steps: int, warmup: int, repeats: int, folder: str) -> dict:
    """configs/synth2d_64.yaml's recipe on the CPU in fp32 and in bf16, alternating: samples/s and their ratio."""
    from medgan.training.precision import native_bf16, resolve_precision

    config, size, batch, device = "configs/synth2d_64.yaml", [64, 64], 16, torch.device("cpu")
    csv = make_pairs(os.path.join(folder, "images"), size)
    runs: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for round_index in range(repeats):
        for name in runs if round_index % 2 == 0 else reversed(runs):
            rate, _ = medgan_trainer(csv, size, batch, steps, warmup, device, False,
                                     os.path.join(folder, f"{name}{round_index}"), config=config,
                                     extra=(f"train.precision={name}", "train.channels_last=true"))  # fmt: skip
            runs[name].append(rate)
    figures = {k: statistics.median(v) for k, v in runs.items()}
    capability = torch.backends.cpu.get_cpu_capability()
    entry = {"config": config, "size": size, "batch": batch, "native_bf16": native_bf16(device),
             "auto_picks": resolve_precision("auto", device), "cpu_capability": capability, "samples_per_s": figures,
             "all_runs": runs, "ratio_bf16_vs_fp32": figures["bf16"] / figures["fp32"]}  # fmt: skip
    print(f"{config} 64x64 batch 16 on the CPU ({entry['cpu_capability']}, native bf16: {entry['native_bf16']}): "
          f"fp32 {figures['fp32']:.1f}  bf16 {figures['bf16']:.1f} samples/s  ratio bf16 / fp32 "
          f"{entry['ratio_bf16_vs_fp32']:.2f}  (auto picks {entry['auto_picks']})")  # fmt: skip
    return entry


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", choices=["2d", "3d"], help="one case instead of both")
    parser.add_argument("--steps", type=int, help="timed steps per run (default: 40 on GPU, 6 on CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps first; also the trainer's log interval")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--compile", action="store_true", help="also medgan with torch.compile (always on a GPU)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled contender on a GPU (time)")
    parser.add_argument("--defaults", action="store_true", help="also medgan's own default networks (synth2d_256)")
    parser.add_argument(
        "--cpu-precision",
        action="store_true",
        help="only the 64x64 CPU recipe in fp32 against bf16 (whether bf16 pays on this CPU)",
    )
    parser.add_argument("--peak-tflops", type=float, help="the device's bf16 peak, to print a fraction of it")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    warmup = args.warmup or (10 if device.type == "cuda" else 2)
    steps = args.steps or (40 if device.type == "cuda" else 6)
    steps = max(warmup, steps // warmup * warmup)  # whole trainer log intervals
    from medgan.models import describe

    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "threads": torch.get_num_threads(), "cases": {}}  # fmt: skip
    if args.cpu_precision:
        with tempfile.TemporaryDirectory() as folder:
            result["cpu_precision"] = cpu_precision(steps, warmup, args.repeats, folder)
        _write(args.json, result)
        return result
    for case, (size, batch) in SIZES[device.type].items():
        if args.only and case != args.only:
            continue
        with tempfile.TemporaryDirectory() as folder:
            csv = make_pairs(os.path.join(folder, "pairs"), size)
            plain_cfg = trainer_config(csv, size, batch, steps, warmup, device, compile_networks=False)
            data = make_data(plain_cfg)
            g, d = networks(plain_cfg, data.record, torch.device("cpu"))
            flops = (
                3 * describe(g, (1, 1, *size))["flops_per_sample"] + 8 * describe(d, (1, 2, *size))["flops_per_sample"]
            )
            del g, d
            runs: dict[str, list[float]] = {"plain": [], "medgan": []}
            if device.type == "cuda":
                runs["plain_tuned"] = []
            if (device.type == "cuda" and not args.no_compile) or args.compile:
                runs["medgan_compile"] = []
            settings = {}
            for round_index in range(args.repeats):
                order = list(runs) if round_index % 2 == 0 else list(reversed(runs))  # no contender always first
                for name in order:
                    if name.startswith("medgan"):
                        compiled = name == "medgan_compile"
                        rate, used = medgan_trainer(csv, size, batch, steps, warmup, device, compiled,
                                                    os.path.join(folder, f"{name}{round_index}"))  # fmt: skip
                        settings[name] = used
                    else:
                        rate = plain_loop(plain_cfg, data, steps, warmup, device, tuned=name == "plain_tuned")
                    runs[name].append(rate)
        best_stock = max(statistics.median(runs[k]) for k in runs if k.startswith("plain"))
        figures = {k: statistics.median(v) for k, v in runs.items()}
        best_medgan = max(v for k, v in figures.items() if k.startswith("medgan"))
        entry = {"size": size, "batch": batch, "samples_per_s": figures, "all_runs": runs,
                 "ratio_vs_plain": best_medgan / figures["plain"], "ratio_vs_best_stock": best_medgan / best_stock,
                 "ratios_vs_best_stock": {k: v / best_stock for k, v in figures.items() if k.startswith("medgan")},
                 "train_flops_per_sample": flops,
                 "tflops": {k: v * flops / 1e12 for k, v in figures.items()}, "medgan_settings": settings}  # fmt: skip
        if args.peak_tflops:
            entry["fraction_of_peak"] = {k: v / args.peak_tflops for k, v in entry["tflops"].items()}
        result["cases"][case] = entry
        shape = "x".join(map(str, size))
        print(f"{case} {shape} batch {batch} on {result['device']}:")
        for name, rate in figures.items():
            peak = f"  {entry['fraction_of_peak'][name]:.1%} of peak" if args.peak_tflops else ""
            print(f"  {name:14s} {rate:9.1f} samples/s  {entry['tflops'][name]:8.3f} model TFLOP/s{peak}")
        ratios = entry["ratio_vs_plain"], entry["ratio_vs_best_stock"]
        print(f"  ratio best medgan / plain: {ratios[0]:.2f}   best medgan / best stock: {ratios[1]:.2f}")
        _write(args.json, result)  # after each case: a run stopped by a time limit keeps what it measured
    if args.defaults:
        with tempfile.TemporaryDirectory() as folder:
            result["default_networks"] = default_networks(device, steps, warmup, args.peak_tflops, folder)
        _write(args.json, result)
    return result


def _write(path: str | None, result: dict) -> None:
    if path:
        with open(path + ".part", "w") as fh:
            json.dump(result, fh, indent=2)
        os.replace(path + ".part", path)


if __name__ == "__main__":
    main()
