"""The training loop: one file, read top to bottom (after EDM's `training_loop.py`).

    from medgan.training import train
    run_dir = train(cfg)                      # cfg: a validated TrainConfig

Set-up, then for every step: generators run once; discriminator phase; lazy R1; generator
phase; EMA; ADA; log; sample; checkpoint. Task logic lives in an objective
(`objectives.py`), so every task shares this loop. A run resumes exactly: weights,
optimizers, EMA, augmentation state, step, every random state and the data order.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from medgan.config import dump_config
from medgan.errors import ConfigError, OutputError
from medgan.io.atomic import atomic_file
from medgan.training import build
from medgan.training.augment import Augment
from medgan.training.checkpoint import (
    check_compatible,
    check_same_data,
    get_rng_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from medgan.training.config import TrainConfig
from medgan.training.distributed import Dist, setup
from medgan.training.ema import EMA
from medgan.training.logging import RunLogger, Stats
from medgan.training.objectives import OBJECTIVES, objective_class
from medgan.training.precision import (
    Precision,
    configure_backends,
    memory_format,
    requires_grad,
    resolve_device,
    resolve_precision,
    step,
)

__all__ = ["train"]

log = logging.getLogger(__name__)
_clock = time.monotonic  # the wall clock train.time_limit_minutes reads (a test replaces it)


def train(cfg: TrainConfig, run_dir: str | None = None, resume: bool = False, name: str = "run") -> str:
    """Train the config's task; returns the run folder. `name` prefixes a new run folder's name."""
    dist = setup(cfg.train.device)
    try:
        return _train(cfg, dist, run_dir, resume, name)
    except torch.cuda.OutOfMemoryError:
        raise ConfigError(
            f"out of GPU memory with train.batch_size {cfg.train.batch_size} and data.image_size "
            f"{cfg.data.image_size}: lower either, or set train.precision=bf16"
        ) from None
    finally:
        dist.shutdown()


def check_networks(cfg: TrainConfig) -> None:
    """Network names, options and the image size, checked in seconds before any data is read (and by
    `--dry-run`): the networks are built on the meta device with provisional channel and class counts."""
    build.check_network_names(cfg.generator, cfg.discriminator)
    task = OBJECTIVES.get(cfg.task)
    provisional: dict = {"channels": cfg.data.slab_slices, "image_channels": 1, "num_classes": 2, "num_labels": 2}
    provisional["domain_b"] = dict(provisional)  # cyclegan's second domain
    build.precheck_networks(task.func.ROLES, objective_class(cfg.task).network_kwargs(provisional, **task.keywords),
                            cfg.generator, cfg.discriminator, cfg.data.spatial_dims, cfg.data.image_size)  # fmt: skip


def _train(cfg: TrainConfig, dist: Dist, run_dir: str | None, resume: bool, name: str) -> str:
    # Device, precision and layout: decided here, nowhere else.
    device = resolve_device(cfg.train.device, dist.local_rank)
    precision = Precision(resolve_precision(cfg.train.precision, device), device)
    channels_last = device.type == "cuda" if cfg.train.channels_last == "auto" else cfg.train.channels_last
    layout = memory_format(cfg.data.spatial_dims, channels_last)
    configure_backends(device)
    check_networks(cfg)
    task = OBJECTIVES.get(cfg.task)

    # The run folder (chosen on rank 0) and, when resuming, its newest checkpoint.
    run_dir = dist.broadcast_object(build.resolve_run_dir(run_dir, resume, name) if dist.is_main else None)
    checkpoint = load_checkpoint(latest_checkpoint(run_dir)) if resume else None
    config = cfg.model_dump(mode="json")
    if checkpoint is not None:
        check_compatible(checkpoint["config"], config, latest_checkpoint(run_dir))
        if int(checkpoint["step"]) >= cfg.train.steps:  # nothing to do; the run's config.yaml stays as it is
            log.warning("%s is already at step %d (train.steps is %d): nothing to train; raise train.steps to "
                        "go on", run_dir, int(checkpoint["step"]), cfg.train.steps)  # fmt: skip
            return run_dir
    cache_dir = cfg.data.cache_dir or os.path.join(run_dir, "cache")
    build.check_creatable(cache_dir, "data.cache_dir")

    # Data, then networks built identically on every rank (DDP also broadcasts rank 0's weights).
    dataset = build.build_dataset(cfg.data, cfg.task, cache_dir)
    record = dataset.record
    if checkpoint is not None:
        check_same_data(checkpoint.get("data_record") or {}, record, latest_checkpoint(run_dir))
    torch.manual_seed(cfg.seed)
    sizes = objective_class(cfg.task).network_kwargs(record, **task.keywords)
    nets = build.build_networks(task.func.ROLES, sizes, cfg.generator, cfg.discriminator, cfg.data.spatial_dims,
                                cfg.data.image_size, cfg.train.batch_size)  # fmt: skip
    for net in nets.values():
        net.to(device=device, memory_format=layout).train()

    # Per-rank seeds: each process draws its own noise and augmentations.
    rank_seed = cfg.seed + 1_000_003 * dist.rank
    torch.manual_seed(rank_seed)
    np.random.seed(rank_seed % 2**32)
    random.seed(rank_seed)
    augment = Augment(
        cfg.data.spatial_dims, cfg.augment.ops, cfg.augment.p, build.sample_spacing(record),
        ada_target=cfg.augment.ada_target, ada_speed_images=cfg.augment.ada_speed_images,
        translate_fraction=cfg.augment.translate_fraction, scale_log2_sd=cfg.augment.scale_log2_sd,
        cutout_fraction=cfg.augment.cutout_fraction, brightness_sd=cfg.augment.brightness_sd,
        contrast_log2_sd=cfg.augment.contrast_log2_sd, seed=rank_seed, device=device,
    )  # fmt: skip
    loss = cfg.loss.model_dump()
    loss["perceptual_network"] = build.load_feature_network(cfg.loss.perceptual_network, device)
    task_options = {k: v for k, v in loss.items() if k in inspect.signature(task.func.setup).parameters}
    objective = task(nets=nets, gan_loss=cfg.loss.gan, r1_gamma=cfg.loss.r1_gamma, augment=augment,
                     r1_interval_steps=cfg.loss.r1_interval_steps, gp_weight=cfg.loss.gp_weight,
                     seed=rank_seed, device=device, **task_options)  # fmt: skip
    if dist.enabled:  # DistributedDataParallel: rank 0's weights to all, gradients averaged during backward
        objective.distribute(lambda net: dist.wrap(net, device))
    if cfg.train.compile:
        objective.compile(torch.compile)

    # Optimizers (one per player), loss scalers for fp16, and the generators' EMA.
    g_params = [p for m in objective.generators().values() for p in m.parameters()]
    d_params = [p for m in objective.discriminators().values() for p in m.parameters()]
    g_opt = build.make_optimizer(g_params, cfg.optim.g_lr, cfg.optim, device)
    d_opt = build.make_optimizer(d_params, cfg.optim.d_lr, cfg.optim, device)
    scalers = {"G": precision.scaler(), "D": precision.scaler()}
    ema = EMA(objective.generators(), cfg.train.ema_halflife_images, cfg.train.ema_rampup_ratio)

    start_step = 0
    if checkpoint is not None:
        start_step = _restore(checkpoint, dist, nets, ema, g_opt, d_opt, scalers, augment, objective)
        log.info("resuming %s at step %d", run_dir, start_step)
    if dist.is_main:
        try:
            os.makedirs(run_dir, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot create the run folder ({err.strerror or err})", path=run_dir) from None
        with atomic_file(os.path.join(run_dir, "config.yaml"), overwrite=True) as temp, open(temp, "w") as fh:
            fh.write(dump_config(cfg))
        if checkpoint is None and os.path.exists(os.path.join(run_dir, "stats.jsonl")):
            os.remove(os.path.join(run_dir, "stats.jsonl"))  # a fresh start in a folder a failed run left

    # The data stream: batch k depends only on (seed, k), so a resumed run continues it exactly.
    batch_size, total = cfg.train.batch_size, cfg.train.steps
    images_per_step = batch_size * dist.world_size
    sampler = build_sampler(len(dataset), batch_size, cfg.seed, dist, start_step)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.data.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )  # its own seed: the global RNG stays put

    batches = iter(loader)
    preview = default_collate([dataset[(i % len(dataset), 0)] for i in range(cfg.train.num_samples)])
    preview = build.to_device(preview, device, layout)
    logger = RunLogger(run_dir, dist.is_main, total, start_step, images_per_step, cfg.train.tensorboard)
    stats = Stats()
    clip = cfg.optim.grad_clip_norm
    stopper = _Stopper(cfg.train.time_limit_minutes, dist)

    with stopper.catching_signals():  # a scheduler's SIGTERM ends the run as the time limit does
        for step_index in range(start_step, total):
            batch = build.to_device(next(batches), device, layout)
            _set_lr(g_opt, cfg.optim.g_lr, d_opt, cfg.optim.d_lr, step_index, total, cfg.optim.lr_decay_start)

            # Generators run once; the discriminator phase sees their output detached.
            with precision.autocast():
                fakes = objective.generate(batch)
                d_loss, d_stats = objective.d_loss(batch, fakes)
            if step_index % cfg.loss.r1_interval_steps == 0:
                with precision.full():
                    regularizer = objective.d_regularizer(batch)
                if regularizer is not None:
                    d_loss = d_loss + regularizer[0]
                    d_stats.update(regularizer[1])
            step(d_opt, d_loss, d_params, scalers["D"], clip)

            # Generator phase: the discriminators pass gradients through but keep none themselves.
            with requires_grad(objective.discriminators().values(), False):
                with precision.autocast():
                    g_loss, g_stats = objective.g_loss(batch, fakes)
                step(g_opt, g_loss, g_params, scalers["G"], clip)
            del fakes

            done = step_index + 1
            ema.update(done * images_per_step, images_per_step)
            augment.observe(d_stats["real_sign"])
            if done % cfg.augment.ada_interval_steps == 0:
                augment.update_p(cfg.augment.ada_interval_steps * images_per_step, dist.reduce_sum)
            stats.add(done, {**d_stats, **g_stats})  # steps are counted from 1, as in logs and checkpoint names
            last = done == total or stopper(done, cfg.train.log_every_steps)

            if done % cfg.train.log_every_steps == 0 or last:
                stats.check_finite()  # stops with the step and the loss that went NaN/Inf
                logger.log(done, stats.means(), {"augment_p": augment.p, "lr_g": g_opt.param_groups[0]["lr"],
                                                 "lr_d": d_opt.param_groups[0]["lr"], **_memory(device)})  # fmt: skip
            if done % cfg.train.sample_every_steps == 0 or last:
                with torch.no_grad(), precision.autocast():
                    rows = objective.preview(ema.modules, preview, seed=cfg.seed)
                logger.samples(done, rows, cfg.train.num_samples)
            if done % cfg.train.checkpoint_every_steps == 0 or last:
                stats.check_finite()  # never checkpoint weights that a NaN has reached
                state = _state(cfg, config, done, images_per_step, record, nets, ema, g_opt, d_opt, scalers, augment,
                               objective, dist)  # fmt: skip
                if dist.is_main:
                    save_checkpoint(run_dir, done, state, keep=cfg.train.keep_checkpoints)
                dist.barrier()
            if last and done < total:
                log.warning("%s at step %d of %d: stopped with a checkpoint; `medgan train --resume` continues",
                            stopper.reason, done, total)  # fmt: skip
                break
    logger.close()
    return run_dir


class _Stopper:
    """When to end a run early, with a checkpoint: its wall-clock budget is spent (train.time_limit_minutes),
    or a scheduler asked it to stop (SIGTERM, or SIGUSR1 as SLURM's --signal sends ahead of the end of a slot).
    With several processes rank 0 decides at log steps, for all of them."""

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self, limit_minutes: float | None, dist: Dist) -> None:
        self.deadline = None if limit_minutes is None else _clock() + 60.0 * limit_minutes
        self.dist, self.signal, self.reason = dist, None, None

    @contextlib.contextmanager
    def catching_signals(self) -> Iterator[None]:
        previous = {}
        if threading.current_thread() is threading.main_thread():  # Python handles signals there only
            for name in self.SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    previous[number] = signal.signal(number, self._caught)
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _caught(self, number: int, frame: Any) -> None:
        self.signal = signal.Signals(number).name

    def _why(self) -> str | None:
        if self.signal is not None:
            return self.signal
        if self.deadline is not None and _clock() >= self.deadline:
            return "train.time_limit_minutes"
        return None

    def __call__(self, done: int, interval: int) -> bool:
        if self.dist.world_size == 1:
            self.reason = self._why()
        elif done % interval:  # the same steps on every rank: each must join the broadcast
            return False
        else:
            self.reason = self.dist.broadcast_object(self._why() if self.dist.is_main else None)
        return self.reason is not None


def _memory(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {"gpu_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30}


def build_sampler(size: int, batch_size: int, seed: int, dist: Dist, start_step: int):
    from medgan.data.datasets import StepBatchSampler

    return StepBatchSampler(size, batch_size, seed, dist.rank, dist.world_size, start_step)


def _set_lr(g_opt, g_lr: float, d_opt, d_lr: float, step_index: int, total: int, decay_start: float | None) -> None:
    """Constant, then (optionally) linear to 0 over the last part of training (pix2pix's schedule)."""
    factor = 1.0
    if decay_start is not None:
        first = int(decay_start * total)
        factor = min(1.0, (total - step_index) / max(total - first, 1))
    for opt, lr in ((g_opt, g_lr), (d_opt, d_lr)):
        for group in opt.param_groups:
            group["lr"] = lr * factor


def _state(cfg, config, done, images_per_step, record, nets, ema, g_opt, d_opt, scalers, augment, objective, dist):
    """Everything a checkpoint holds; per-process random states are gathered from every rank."""
    per_rank = dist.gather_objects({"rng": get_rng_state(), "objective": objective.state_dict(),
                                    "augment": augment.state_dict(), "weights": _digest(nets)})  # fmt: skip
    if len({str(r["weights"]) for r in per_rank}) > 1:
        log.warning("step %d: the processes' weights differ (%s); gradients are not being averaged alike",
                    done, [r["weights"] for r in per_rank])  # fmt: skip
    return {
        "config": config,
        "step": done,
        "images_seen": done * images_per_step,
        "world_size": dist.world_size,
        "networks": {name: net.state_dict() for name, net in nets.items()},
        "ema": ema.state_dict(),
        "optimizers": {"G": g_opt.state_dict(), "D": d_opt.state_dict()},
        "scalers": {k: s.state_dict() for k, s in scalers.items() if s is not None},
        "ranks": per_rank,
        "data_record": record,
    }


def _digest(nets: dict[str, torch.nn.Module]) -> dict[str, list[float]]:
    """Per network: the sum and the sum of squares of its parameters (float64), to compare processes."""
    out = {}
    for name, net in nets.items():
        flat = torch.cat([p.detach().double().flatten() for p in net.parameters()])
        out[name] = [flat.sum().item(), flat.square().sum().item()]
    return out


def _first_mismatch(expected: dict[str, Any], stored: dict[str, Any]) -> str | None:
    """The first parameter or buffer whose presence or shape differs, in words (None when all fit)."""
    for key, value in expected.items():
        if key not in stored:
            return f"{key} is missing from the checkpoint"
        if tuple(stored[key].shape) != tuple(value.shape):
            return f"{key} is {list(stored[key].shape)} in the checkpoint but {list(value.shape)} here"
    extra = [key for key in stored if key not in expected]
    return f"{extra[0]} is in the checkpoint but not in these networks" if extra else None


def _restore(checkpoint: dict[str, Any], dist, nets, ema, g_opt, d_opt, scalers, augment, objective) -> int:
    """Load a checkpoint's states; returns its step. A state that does not fit is a ConfigError."""
    for name, net in nets.items():
        mismatch = _first_mismatch(net.state_dict(), checkpoint["networks"].get(name, {}))
        if mismatch:
            raise ConfigError(f"the checkpoint does not fit these networks: {name}.{mismatch} (class and label "
                              "counts come from the data: check data.source); resume with the run's own "
                              "config.yaml and data")  # fmt: skip
    try:
        for name, net in nets.items():
            net.load_state_dict(checkpoint["networks"][name])
        ema.load_state_dict(checkpoint["ema"])
        g_opt.load_state_dict(checkpoint["optimizers"]["G"])
        d_opt.load_state_dict(checkpoint["optimizers"]["D"])
        for key, scaler in scalers.items():
            if scaler is not None and key in checkpoint["scalers"]:
                scaler.load_state_dict(checkpoint["scalers"][key])
    except (KeyError, RuntimeError, ValueError) as err:
        raise ConfigError(f"the checkpoint does not fit these networks ({str(err).splitlines()[0][:160]}); "
                          "resume with the run's own config.yaml") from None  # fmt: skip
    ranks = checkpoint["ranks"]
    if checkpoint.get("world_size") == dist.world_size:
        mine = ranks[dist.rank]
        set_rng_state(mine["rng"])
    else:  # another process count: the data order still continues; noise streams restart per rank
        log.warning("checkpoint from %s processes, resuming on %s: random streams are re-seeded",
                    checkpoint.get("world_size"), dist.world_size)  # fmt: skip
        mine = {**ranks[0], "objective": objective.state_dict(), "augment": {**augment.state_dict(),
                "p": ranks[0]["augment"]["p"]}}  # fmt: skip
    objective.load_state_dict(mine["objective"])
    augment.load_state_dict(mine["augment"])
    return int(checkpoint["step"])
