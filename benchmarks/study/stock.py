"""The stock peer: MONAI's MedNIST DCGAN tutorial, as published, trained on the study's slices.

64 x 64 images scaled to 0..1, monai.networks.nets Generator and Discriminator with the tutorial's
arguments, normal_init, a sigmoid on G, BCE, Adam 2e-4 (0.5, 0.999), batch 300, and per batch one G
step followed by 5 D steps on the same real and generated images. Augmentation as the tutorial:
random rotation (up to 15 degrees), flip and zoom (0.9 to 1.1). One change, in the peer's favour: no
DataLoader workers (a few hundred cached slices make one batch, and workers would be restarted every
epoch).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import time

import torch

from benchmarks.study.common import log, real_images, real_slices, study_config

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


def _loader(images: torch.Tensor) -> torch.utils.data.DataLoader:
    """The tutorial's augmentation over the cached slices, shuffled, in batches of 300."""
    from monai.data import CacheDataset
    from monai.transforms import Compose, RandFlip, RandRotate, RandZoom, ScaleIntensity

    transforms = Compose([
        ScaleIntensity(),
        RandRotate(range_x=math.pi / 12, prob=0.5, keep_size=True),
        RandFlip(spatial_axis=0, prob=0.5),
        RandZoom(min_zoom=0.9, max_zoom=1.1, prob=0.5),
    ])  # fmt: skip
    dataset = CacheDataset(list(images), transforms, progress=False)
    return torch.utils.data.DataLoader(dataset, batch_size=STOCK["batch_size"], shuffle=True, num_workers=0)


def _save_generator(path: str, g: torch.nn.Module, step: int, seen: int) -> None:
    torch.save({"G": g.state_dict(), "step": step, "images_seen": seen}, path + ".partial")
    os.replace(path + ".partial", path)


def stock_checkpoint_path(run_dir: str, images: int) -> str:
    """Where `stock --images` keeps G once `images` training images have been seen."""
    return os.path.join(run_dir, f"generator_{images:07d}.pt")


def stock_train(args: argparse.Namespace) -> int:
    """Train the tutorial's DCGAN on the study's slices until --minutes (or SIGTERM); save G and a summary.
    With --images, train until the largest count instead (no clock) and keep G at the first step that reaches
    each count (`stock_checkpoint_path`)."""
    from monai.utils import set_determinism

    began = time.monotonic()
    stop = {"signal": None}
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))
    os.makedirs(args.out, exist_ok=True)
    device = torch.device(args.device)
    cfg = study_config(args.config, os.path.abspath(args.data), list(args.set))
    real, _ = real_images(real_slices(cfg))
    images = stock_real(real)
    set_determinism(seed=args.seed)
    loader = _loader(images)
    g, d = stock_networks()
    g, d = g.to(device), d.to(device)
    bce = torch.nn.BCELoss()
    opt_d = torch.optim.Adam(d.parameters(), STOCK["learning_rate"], betas=STOCK["betas"])
    opt_g = torch.optim.Adam(g.parameters(), STOCK["learning_rate"], betas=STOCK["betas"])
    counts = sorted(getattr(args, "images", None) or [])
    deadline = float("inf") if counts else began + args.minutes * 60
    pending = list(counts)  # the counts whose checkpoint is still to be written
    step, seen, rows = 0, 0, []
    stats = open(os.path.join(args.out, "stats.jsonl"), "w")  # noqa: SIM115 - closed below
    last_log = time.monotonic()
    while time.monotonic() < deadline and stop["signal"] is None and (not counts or pending):
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
            while pending and seen >= pending[0]:
                _save_generator(stock_checkpoint_path(args.out, pending.pop(0)), g, step, seen)
            if time.monotonic() >= deadline or stop["signal"] is not None or (counts and not pending):
                break
    stats.close()
    path = os.path.join(args.out, "generator.pt")
    _save_generator(path, g, step, seen)
    ended = "images" if counts and not pending else "time limit"
    summary = {"steps": step, "images_seen": seen, "train_time_s": round(time.monotonic() - began, 2),
               "stopped_by": "SIGTERM" if stop["signal"] else ended, "recipe": STOCK, "data_loader_workers": 0,
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
