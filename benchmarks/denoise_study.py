"""Low-dose CT denoising on real scans: medgan's pix2pix enhancer against non-local means and the input.

    python benchmarks/denoise_study.py --minutes 15 --json denoise_cpu.json          # CPU (about 20 minutes)
    python benchmarks/denoise_study.py prepare --preset gpu                            # here, before a GPU call
    python benchmarks/denoise_study.py --device cuda --minutes 1.25 --json out.json  # on the GPU

Data (benchmarks/denoise_data.py): training scans are the InVesalius head CT and the pyradiomics lung1
chest CT; the held-out scan is lung2 (another patient). Each is read with medgan's readers, turned to
RAS and resampled in-plane to one pixel size (the preset's: 1.6 mm on the CPU, a whole slice in 208 x 208;
1.25 mm on the GPU, 272 x 272), slices untouched, HU kept. Samples are whole axial slices, centred and
padded with air, as the ct-lowdose simulator needs (it projects the sample's field of view).

Pairs: ct-lowdose (docs/enhancement.md) at `--dose` (default 0.25 of the 1e5-quanta reference, for 1 mm
slices: the simulator's 2D default) for evaluation, and doses drawn uniformly from `--train-dose` for
training. Evaluation inputs are degraded once, on the CPU with a fixed seed, and stored in integer HU,
so every method (and every device) sees the same noisy slices: `--eval-slices` whole slices spread
evenly over the held-out scan. A second set from the training scans (another seed) tunes the peer.

Contenders, scored by medgan.metrics.image against the clean slice in the training window
[-1024, 1024] HU (PSNR and SSIM with data range 2048 HU, MAE in HU), every output clipped to it:
  input    the degraded slice itself (a do-nothing enhancer)
  nlm      scikit-image `denoise_nl_means` (fast mode), sigma from `estimate_sigma` per slice, h = factor x
           sigma with factor, patch size and search distance picked by grid search for the best mean PSNR
           on the training scans' degraded slices at the same dose
  medgan   `task: pix2pix` (residual U-Net + PatchGAN, L1 x 100 + LSGAN) trained on pairs simulated each
           step from the training scans for `--minutes` (train.time_limit_minutes), with data.validation
           on the held-out scan (val_* in stats.jsonl as it goes); the final EMA generator is scored

`prepare` writes the scans (under .cache/, git-ignored) and the evaluation set with the peer's outputs,
so a machine without scikit-image (the lent GPU) can still report the peer: the run reuses them.
Prints a table and writes `--json`; `--figure` writes noisy | NLM | medgan | clean with a zoom.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.denoise_data import REPO, image_size, load_manifest, log, prepare, slices
from benchmarks.denoise_report import figure, print_table, summarize

WINDOW = (-1024.0, 1024.0)  # HU: the training window, where every score is computed
PRESETS: dict[str, dict[str, Any]] = {
    # The CPU: 1.6 mm pixels keep a whole chest slice in 208 x 208 for the simulator; 180 views halve its cost
    # (its noise level does not depend on the number of views). The networks train on four 64 x 64 tissue
    # patches of each degraded slice (air was three quarters of whole slices), with a small adversarial term:
    # the scores here are PSNR and SSIM, which a strong one trades for texture.
    "cpu": {"pixel_mm": 1.6, "views": 180, "batch": 4, "precision": "fp32", "eval_slices": 24, "minutes": 15.0,
            "patch": [64, 64], "patches": 4, "adversarial_weight": 0.01,
            "generator_name": "dncnn", "generator": {"channels": 32, "depth": 10},
            "discriminator": {"channels": 16, "num_layers": 3},
            "g_lr": 5e-4, "d_lr": 2e-4, "validate_every": 100, "validation_samples": 8},
    # The GPU: finer pixels (a slice in 272 x 272), the simulator's default views, a wider U-Net, bf16.
    "gpu": {"pixel_mm": 1.25, "views": 360, "batch": 8, "precision": "bf16", "eval_slices": 24, "minutes": 1.25,
            "patch": [96, 96], "patches": 4, "adversarial_weight": 0.05,
            "generator_name": "dncnn", "generator": {"channels": 64, "depth": 17},
            "discriminator": {"channels": 32, "num_layers": 3},
            "g_lr": 2e-4, "d_lr": 2e-4, "validate_every": 100, "validation_samples": 16},
}  # fmt: skip
NLM_GRID = {"h_factor": (0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0), "patch_size": (3, 5, 7), "patch_distance": (5, 9)}
TUNE_SLICES = 12  # training-scan slices the peer is tuned on
EVAL_SEED, TUNE_SEED = 0, 1


def default_data(preset: dict[str, Any]) -> Path:
    return REPO / ".cache" / "denoise_study" / f"data_{preset['pixel_mm']:g}mm"


def study_config(data: Path, preset: dict[str, Any], device: str, minutes: float, train_dose: list[float]):
    """The training config: the CPU twin of the low-dose enhancer with the study's data, networks and budget."""
    from medgan.config import load_config
    from medgan.tasks.config import TrainConfig

    size = image_size(load_manifest(data))
    sets = {
        "data.source": str(data / "train"), "data.validation": str(data / "heldout"),
        "data.validation_samples": preset["validation_samples"], "data.image_size": [size, size],
        "data.spacing_mm": [preset["pixel_mm"]] * 2, "data.window": list(WINDOW), "data.crop": "center",
        "data.degrade": {"kind": "ct-lowdose", "params": {"dose": train_dose, "views": preset["views"]},
                         "patch_size": preset["patch"], "patches_per_sample": preset["patches"]},
        "loss.adversarial_weight": preset["adversarial_weight"],
        "generator.name": preset["generator_name"], "generator.options": preset["generator"],
        "discriminator.options": preset["discriminator"],
        "optim.g_lr": preset["g_lr"], "optim.d_lr": preset["d_lr"],
        "train.steps": 1_000_000, "train.time_limit_minutes": minutes, "train.batch_size": preset["batch"],
        "train.device": device, "train.precision": preset["precision"], "train.channels_last": device == "cuda",
        "train.ema_halflife_images": 1000, "train.ema_rampup_ratio": 0.1, "train.log_every_steps": 10,
        "train.sample_every_steps": 1_000_000, "train.checkpoint_every_steps": 1_000_000,
        "train.validate_every_steps": preset["validate_every"], "train.keep_checkpoints": 1,
        "train.num_samples": 4, "train.tensorboard": False,
    }  # fmt: skip
    overrides = [f"{key}={json.dumps(value)}" for key, value in sets.items()]
    return load_config(TrainConfig, REPO / "configs" / "debug_cpu_enhance_ct_lowdose_2d.yaml", overrides)


def degrade_fixed(clean_hu: torch.Tensor, dose: float, views: int, spacing: float, seed: int) -> torch.Tensor:
    """ct-lowdose at one dose, on the CPU from a fixed seed, rounded to integer HU as a scanner stores it."""
    from medgan.data.degradations import DEGRADATIONS

    lowdose = DEGRADATIONS.build("ct-lowdose", dose=dose, views=views)
    records = lowdose.sample(clean_hu.shape[0], seed, (spacing, spacing))
    return lowdose.apply(clean_hu.float(), records, (spacing, spacing)).round()


def clip(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.float64), *WINDOW)


def nlm(noisy: np.ndarray, h_factor: float, patch_size: int, patch_distance: int) -> np.ndarray:
    """Non-local means of each `[N, 1, H, W]` slice (HU, clipped to the window), h = factor x estimated sigma."""
    from skimage.restoration import denoise_nl_means, estimate_sigma

    out = np.empty_like(noisy, dtype=np.float64)
    for i, image in enumerate(clip(noisy)[:, 0]):
        sigma = float(estimate_sigma(image))
        out[i, 0] = denoise_nl_means(image, h=h_factor * sigma, sigma=sigma, patch_size=patch_size,
                                     patch_distance=patch_distance, fast_mode=True)  # fmt: skip
    return out


def tune_nlm(clean: np.ndarray, noisy: np.ndarray) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The NLM settings of the grid with the best mean PSNR on (clean, noisy), and every setting's score."""
    from medgan.metrics.image import psnr

    rows = []
    for patch_size in NLM_GRID["patch_size"]:
        for patch_distance in NLM_GRID["patch_distance"]:
            for h_factor in NLM_GRID["h_factor"]:
                settings = {"h_factor": h_factor, "patch_size": patch_size, "patch_distance": patch_distance}
                out = nlm(noisy, **settings)
                score = psnr(clip(clean), out.round(), WINDOW[1] - WINDOW[0], spatial_dims=2).mean()
                rows.append({**settings, "psnr": float(score)})
    return max(rows, key=lambda r: r["psnr"]), rows


def evaluation_set(cfg, data: Path, preset: dict[str, Any], dose: float, count: int) -> dict[str, Any]:
    """The held-out slices (clean and degraded, integer HU) and the tuned peer's outputs on them; made once per
    setting and kept in `data` (so a machine without scikit-image reuses the peer's outputs made here)."""
    size = cfg.data.image_size[0]
    key = f"eval_dose{dose:g}_n{count}_views{preset['views']}_size{size}_seed{EVAL_SEED}"
    path = data / f"{key}.npz"
    info = json.loads((data / f"{key}.json").read_text()) if (data / f"{key}.json").is_file() else {}
    if path.is_file() and info.get("nlm_grid") == {k: list(v) for k, v in NLM_GRID.items()}:
        stored = np.load(path, allow_pickle=False)
        log(f"evaluation set and the tuned peer's outputs from {path}")
        return {"clean": stored["clean"], "noisy": stored["noisy"], "nlm": stored["nlm"], **info}
    spacing = preset["pixel_mm"]
    cache = str(data / ".dataset_cache")
    began = time.perf_counter()
    clean, where = slices(cfg, str(data / "heldout"), count, cache)
    noisy = degrade_fixed(clean, dose, preset["views"], spacing, EVAL_SEED)
    tune_clean, tune_where = slices(cfg, str(data / "train"), TUNE_SLICES, cache)
    tune_noisy = degrade_fixed(tune_clean, dose, preset["views"], spacing, TUNE_SEED)
    log(f"{count} held-out and {len(tune_where)} training slices degraded at dose {dose:g} in "
        f"{time.perf_counter() - began:.0f} s; tuning non-local means on the training slices")  # fmt: skip
    began = time.perf_counter()
    best, grid = tune_nlm(tune_clean.numpy(), tune_noisy.numpy())
    tune_s = time.perf_counter() - began
    settings = {k: best[k] for k in ("h_factor", "patch_size", "patch_distance")}
    began = time.perf_counter()
    peer = nlm(noisy.numpy(), **settings).round()
    apply_s = time.perf_counter() - began
    log(f"non-local means: {settings} (training PSNR {best['psnr']:.2f} dB), tuned in {tune_s:.0f} s over "
        f"{len(grid)} settings, applied in {apply_s:.1f} s")  # fmt: skip
    arrays = {name: a.numpy().astype(np.int16) if isinstance(a, torch.Tensor) else a.astype(np.int16)
              for name, a in (("clean", clean), ("noisy", noisy), ("nlm", peer))}  # fmt: skip
    info = {"where": where, "tune_where": tune_where, "nlm_settings": settings, "nlm_tuning": grid,
            "nlm_grid": {k: list(v) for k, v in NLM_GRID.items()},
            "nlm_tune_s": tune_s, "nlm_apply_s": apply_s, "dose": dose, "views": preset["views"],
            "seed": EVAL_SEED, "tune_seed": TUNE_SEED}  # fmt: skip
    np.savez_compressed(path, **arrays)
    (data / f"{key}.json").write_text(json.dumps(info, indent=1))
    return {**arrays, **info}


def train_medgan(cfg, run_dir: Path) -> dict[str, Any]:
    """Train for the config's time limit; the final checkpoint, steps, images seen and the val_* curve."""
    from medgan.tasks.checkpoint import latest_checkpoint
    from medgan.training import train

    began = time.perf_counter()
    train(cfg, run_dir=str(run_dir))
    seconds = time.perf_counter() - began
    lines = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines() if line.strip()]
    validation = [r for r in lines if "val_psnr" in r]
    steps = max(r["step"] for r in lines)
    curve = [{k: v for k, v in r.items() if k == "step" or k.startswith("val_")} for r in validation]
    return {"checkpoint": latest_checkpoint(str(run_dir)), "steps": steps,
            "images_seen": steps * cfg.train.batch_size, "train_s": seconds, "validation": curve}  # fmt: skip


@torch.no_grad()
def apply_medgan(checkpoint: str, noisy_hu: np.ndarray, device: torch.device, batch: int = 8) -> np.ndarray:
    """The checkpoint's EMA generator on degraded slices in HU, as validation runs it; integer HU out."""
    from medgan.data.transforms import from_unit, to_unit
    from medgan.inference import load_generators

    model = load_generators(checkpoint, device=device)
    task, g = model.task, model.output
    low, high = task.input_window(model.record, "source")
    out = []
    for start in range(0, len(noisy_hu), batch):
        x = to_unit(torch.from_numpy(noisy_hu[start : start + batch]).float().to(device), low, high)
        y = task.finish(g(task.generator_input({"source": x}, g)), {"source": x}).float().clamp(-1, 1)
        out.append(from_unit(y, *model.made["window"]).round().cpu())
    return torch.cat(out).numpy()


def machine(device: torch.device) -> dict[str, Any]:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device)}  # fmt: skip
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("mode", nargs="?", choices=("run", "prepare"), default="run",
                        help="run (the default; prepares what is missing) or prepare only")  # fmt: skip
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="settings (default: gpu on CUDA, else cpu)")
    parser.add_argument("--minutes", type=float, help="training time (default: the preset's, 15 on the CPU)")
    parser.add_argument("--dose", type=float, default=0.25, help="evaluation dose fraction (default 0.25)")
    parser.add_argument("--train-dose", type=float, nargs=2, default=(0.15, 0.4), metavar=("LOW", "HIGH"),
                        help="training doses, drawn uniformly per slice (default 0.15 0.4)")  # fmt: skip
    parser.add_argument("--eval-slices", type=int, help="held-out slices scored (default: the preset's, 24)")
    parser.add_argument("--data", type=Path, help="prepared scans (default .cache/denoise_study/data_<mm>mm)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "denoise_study", help="run folder (training)")
    parser.add_argument("--json", type=Path, help="write the results here (JSON)")
    parser.add_argument("--figure", type=Path, help="write the before/after montage here (PNG)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: 1 on the CPU, where threads "
                        "waiting for each other on a shared machine cost more than they give)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    preset = dict(PRESETS[args.preset or ("gpu" if device.type == "cuda" else "cpu")])
    minutes = args.minutes or preset["minutes"]
    count = args.eval_slices or preset["eval_slices"]
    data = args.data or default_data(preset)
    began = time.perf_counter()
    if load_manifest(data) is None:
        prepare(data, preset["pixel_mm"])
    elif load_manifest(data)["pixel_mm"] != preset["pixel_mm"]:
        raise SystemExit(f"{data} holds scans at {load_manifest(data)['pixel_mm']} mm; this preset needs "
                         f"{preset['pixel_mm']} mm (another --data)")  # fmt: skip
    cfg = study_config(data, preset, device.type, minutes, list(args.train_dose))
    evaluation = evaluation_set(cfg, data, preset, args.dose, count)
    if args.mode == "prepare":
        log(f"prepared {data} in {time.perf_counter() - began:.0f} s")
        return 0
    run_dir = args.out / f"{device.type}_dose{args.dose:g}_{time.strftime('%Y%m%d-%H%M%S')}"
    log(f"training medgan for {minutes:g} minutes on {device} into {run_dir}")
    trained = train_medgan(cfg, run_dir)
    enhanced = apply_medgan(trained["checkpoint"], evaluation["noisy"], device)
    outputs = {"input": evaluation["noisy"], "nlm": evaluation["nlm"], "medgan": enhanced}
    scores = summarize(evaluation["clean"], outputs, WINDOW)
    result = {
        "benchmark": "denoise_study", "machine": machine(device), "preset": preset, "minutes": minutes,
        "dose": args.dose, "train_dose": list(args.train_dose), "window_hu": list(WINDOW),
        "data": {**load_manifest(data), "folder": str(data), "eval_slices": evaluation["where"],
                 "tune_slices": evaluation["tune_where"], "image_size": cfg.data.image_size},
        "nlm": {"settings": evaluation["nlm_settings"], "tuning": evaluation["nlm_tuning"],
                "tune_s": evaluation["nlm_tune_s"], "apply_s": evaluation["nlm_apply_s"]},
        "medgan": {k: trained[k] for k in ("steps", "images_seen", "train_s", "validation")} | {
            "checkpoint": trained["checkpoint"], "config": cfg.model_dump(mode="json")},
        "scores": scores, "wall_s": time.perf_counter() - began,
    }  # fmt: skip
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    if args.figure:
        figure(evaluation["clean"], outputs, evaluation["where"], args.figure)
        log(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
