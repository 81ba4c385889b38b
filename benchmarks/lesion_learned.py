"""Learned lesion content on real tumours: train the `inpaint` task on the pyradiomics tumours, leave-one-out.

    python benchmarks/lesion_learned.py [--minutes 10] [--device cpu] [--out .cache/lesion_learned] [--json m.json]
    python benchmarks/lesion_realism.py --learned .cache/lesion_learned/manifest.json     # then judge them

The real tumours are those of the pyradiomics 3.0.1 test cases (benchmarks/registry_data.py): lung1 and
lung2 (chest CT) and brain1 and brain2 (T1 post-contrast MR), each with a tumour label. The realism
benchmark inserts lesions into these same scans and compares them with these same tumours, so a model
that had seen a case's tumour would be judged on what it memorised. The split is therefore
leave-one-out within a modality: the model for lung1 is trained on lung2's tumour alone, the one for
lung2 on lung1's, and likewise for brain1 and brain2 (four models; CT and MR are never mixed, since
they share no intensity scale). The scans it is judged on are never seen in training. One training
tumour per model (3 to 11 slices of it) makes a demonstration of the pipeline on real data, not a
model of a population: bring your own labelled cases for real use.

Training data: a CSV (image, mask) per model under --out (never committed), the mask column the
tumour's label file, `data.crop: mask` so every sample is a slice through the tumour centred on it
(give or take a quarter of the sample). CT is windowed -1000..600 HU; MR has no physical unit, so
each MR scan is scaled so that its healthy brain's median is 1000 (`lesion_realism.mr_scale`; the
realism benchmark scales a scan the same way before a learned model paints it and back after) and
windowed 0..3500. Every model: 2D axial slices of 64 x 64 at 1 mm (64 mm of anatomy), a U-Net of 16
to 64 channels, 4 levels, residual (it paints a correction to its input), a PatchGAN of 2 layers,
LSGAN with L1 inside the hole (weight 20), batch 8, Adam 2e-4, stopped by `train.time_limit_minutes`
(--minutes shared equally between the four models). Writes `manifest.json`: per held-out case the
checkpoint, its step and what it was trained on.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# The held-out case -> the cases its model is trained on (the same modality, never the case itself).
SPLIT = {"lung1": ["lung2"], "lung2": ["lung1"], "brain1": ["brain2"], "brain2": ["brain1"]}
WINDOWS = {"CT": [-1000.0, 600.0], "MR": [0.0, 3500.0]}  # HU; MR in units of the healthy brain's median / 1000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "lesion_inpaint_2d.yaml")


def log(message: str) -> None:
    print(f"[lesion_learned] {message}", file=sys.stderr, flush=True)


def modality_of(case: str) -> str:
    return "CT" if case.startswith("lung") else "MR"


def training_scan(case: str, folder: str) -> tuple[str, str]:
    """(image path, tumour label path) of a case as a model trains on it: CT as it is, MR scaled to its brain."""
    from benchmarks.lesion_realism import load_case, mr_scale
    from benchmarks.registry_data import pyradiomics_case

    image_path, label_path = (str(p) for p in pyradiomics_case(case))
    if modality_of(case) == "CT":
        return image_path, label_path
    from medgan.io import write_image

    scaled = os.path.join(folder, f"{case}_scaled.nii.gz")
    if not os.path.exists(scaled):
        image, _, _, healthy, _ = load_case(case)
        write_image(image * mr_scale(image.numpy()[0], healthy), scaled)
    return scaled, label_path


def config_for(csv_path: str, modality: str, minutes: float, device: str):
    """The CPU-sized inpaint config (module docstring) over configs/lesion_inpaint_2d.yaml."""
    from medgan.config import load_config
    from medgan.tasks.config import TrainConfig

    cpu = device == "cpu"
    overrides = [
        f"data.source={csv_path}", "data.image_size=[64,64]", "data.spacing_mm=[1.0,1.0]",
        f"data.window={WINDOWS[modality]}", "data.num_workers=0", "data.crop=mask",
        "generator.options={channels: 16, max_channels: 64, depth: 4, residual: true}",
        "discriminator.options={channels: 16, num_layers: 2}",
        "train.steps=1000000", f"train.time_limit_minutes={minutes}", "train.batch_size=8", f"train.device={device}",
        f"train.precision={'fp32' if cpu else 'auto'}", "train.compile=false", "train.channels_last=auto",
        "train.ema_halflife_images=2000", "train.log_every_steps=100", "train.sample_every_steps=1000000",
        "train.checkpoint_every_steps=1000000", "train.keep_checkpoints=1", "train.tensorboard=false",
        "train.num_samples=4", "optim.lr_decay_start=null",
    ]  # fmt: skip
    return load_config(TrainConfig, CONFIG, overrides)


def train_one(case: str, out: str, minutes: float, device: str) -> dict:
    """Train the model that paints lesions into `case` on the other cases of its modality."""
    from medgan.tasks.checkpoint import latest_checkpoint
    from medgan.training import train

    modality = modality_of(case)
    folder = os.path.join(out, f"for_{case}")
    os.makedirs(folder, exist_ok=True)
    csv_path = os.path.join(folder, "lesions.csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "mask"])
        for other in SPLIT[case]:
            writer.writerow(training_scan(other, out))
    cfg = config_for(csv_path, modality, minutes, device)
    start = time.perf_counter()
    run_dir = train(cfg, run_dir=os.path.join(folder, "run"))
    wall = time.perf_counter() - start
    checkpoint = latest_checkpoint(run_dir)
    step = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"])
    log(f"model for {case} (trained on {', '.join(SPLIT[case])}): {step} steps in {wall / 60:.1f} min -> {checkpoint}")
    return {"checkpoint": os.path.abspath(checkpoint), "step": step, "trained_on": SPLIT[case], "modality": modality,
            "window": WINDOWS[modality], "minutes": wall / 60, "images_seen": step * cfg.train.batch_size,
            "mr_scaled_to_brain_median": 1000.0 if modality == "MR" else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall time, shared by the models")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--out",
        default=os.path.join(REPO, ".cache", "lesion_learned"),
        help="training CSVs, scaled MR scans, runs and manifest.json (default .cache/lesion_learned)",
    )
    parser.add_argument("--cases", nargs="*", default=list(SPLIT), help="held-out cases to train a model for")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    parser.add_argument("--json", help="also write the manifest here")
    args = parser.parse_args()
    unknown = sorted(set(args.cases) - set(SPLIT))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)} (valid: {', '.join(SPLIT)})")
    torch.set_num_threads(args.threads)
    np.seterr(all="ignore")
    os.makedirs(args.out, exist_ok=True)
    each = args.minutes / len(args.cases)
    models = {case: train_one(case, args.out, each, args.device) for case in args.cases}
    manifest = {"split": "leave-one-out within a modality: each case's model never saw that case",
                "device": args.device, "threads": args.threads, "models": models}  # fmt: skip
    text = json.dumps(manifest, indent=1)
    with open(os.path.join(args.out, "manifest.json"), "w", encoding="utf-8") as fh:
        fh.write(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text)
    for case, m in models.items():
        print(f"{case:7s} {m['modality']}  trained on {', '.join(m['trained_on']):7s} {m['step']:6d} steps "
              f"({m['images_seen']} slices) in {m['minutes']:.1f} min  {m['checkpoint']}")  # fmt: skip
    print(f"judge them: python benchmarks/lesion_realism.py --learned {os.path.join(args.out, 'manifest.json')}")


if __name__ == "__main__":
    main()
