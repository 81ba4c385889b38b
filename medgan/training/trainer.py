"""The training loop: one file, read top to bottom (after EDM's `training_loop.py`).

    from medgan.training import train
    run_dir = train(cfg)                      # cfg: a validated TrainConfig

Set-up, then for every step: generators run once; discriminator phase; lazy R1; generator
phase; EMA; ADA; log; sample; checkpoint. What a task reads and builds is declared in
`medgan.tasks`, what its players minimise in its objective (`objectives/`), so every task shares
this loop. A run resumes exactly: weights, optimizers, EMA, augmentation state, step, every
random state and the data order (`run_state.py`).
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch
from torch.utils.data import default_collate

from medgan.config import dump_config
from medgan.errors import ConfigError, OutputError
from medgan.io.atomic import atomic_file
from medgan.tasks import TASKS
from medgan.tasks.checkpoint import (
    check_compatible,
    check_same_data,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from medgan.tasks.config import TrainConfig
from medgan.tasks.networks import build_task_networks, check_networks
from medgan.training import build
from medgan.training.distributed import Dist, setup
from medgan.training.ema import EMA
from medgan.training.logging import RunLogger, Stats, record_session
from medgan.training.objectives import OBJECTIVES
from medgan.training.precision import (
    Precision,
    configure_backends,
    memory_format,
    requires_grad,
    resolve_device,
    resolve_precision,
    step,
)
from medgan.training.run_state import RunState
from medgan.training.stopping import Stopper

__all__ = ["check_networks", "train"]

log = logging.getLogger(__name__)


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


def _train(cfg: TrainConfig, dist: Dist, run_dir: str | None, resume: bool, name: str) -> str:
    # Device, precision and layout: decided here, nowhere else.
    device = resolve_device(cfg.train.device, dist.local_rank)
    precision = Precision(resolve_precision(cfg.train.precision, device), device)
    channels_last = device.type == "cuda" if cfg.train.channels_last == "auto" else cfg.train.channels_last
    layout = memory_format(cfg.data.spatial_dims, channels_last)
    configure_backends(device)
    check_networks(cfg)  # in seconds, before any data is read
    task = TASKS.get(cfg.task)

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
    dataset = build.build_dataset(cfg.data, task, cache_dir)
    record = dataset.record
    if checkpoint is not None:
        check_same_data(checkpoint.get("data_record") or {}, record, latest_checkpoint(run_dir))
    torch.manual_seed(cfg.seed)
    nets = build_task_networks(cfg, record, batch_size=cfg.train.batch_size)
    for net in nets.values():
        net.to(device=device, memory_format=layout).train()

    # Per-rank seeds: each process draws its own noise and augmentations.
    rank_seed = cfg.seed + 1_000_003 * dist.rank
    torch.manual_seed(rank_seed)
    np.random.seed(rank_seed % 2**32)
    random.seed(rank_seed)
    augment = build.make_augment(cfg, record, rank_seed, device)
    simulate = build.make_simulator(cfg, task, record, rank_seed)  # data.degrade: pairs made on the device
    objective = OBJECTIVES.build(cfg.task, nets=nets, options=cfg.loss, gan_loss=cfg.loss.gan, augment=augment,
                                 r1_gamma=cfg.loss.r1_gamma, r1_interval_steps=cfg.loss.r1_interval_steps,
                                 gp_weight=cfg.loss.gp_weight, reconstruction_weight=cfg.loss.d_reconstruction_weight,
                                 seed=rank_seed, device=device)  # fmt: skip
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
    state = RunState(config, record, nets, ema, {"G": g_opt, "D": d_opt}, scalers, augment, objective, dist, simulate)

    start_step = 0
    if checkpoint is not None:
        start_step = state.restore(checkpoint)
        log.info("resuming %s at step %d", run_dir, start_step)
    if dist.is_main:
        _start_run_folder(run_dir, cfg, fresh=checkpoint is None)
        record_session(run_dir, start_step, device, precision.name, channels_last, cfg.train.compile, dist.world_size)

    batch_size, total = cfg.train.batch_size, cfg.train.steps
    images_per_step = batch_size * dist.world_size * (simulate.per_sample if simulate is not None else 1)
    batches = iter(build.make_loader(dataset, cfg, dist, start_step, device))
    preview = default_collate([dataset[(i % len(dataset), 0)] for i in range(cfg.train.num_samples)])
    preview = build.to_device(preview, device, layout)
    if simulate is not None:  # the same degraded inputs in every grid
        preview = simulate(preview, torch.Generator().manual_seed(cfg.seed), whole=True)
    validate = build.make_validator(cfg, task, record, cache_dir, simulate, device, layout) if dist.is_main else None
    logger = RunLogger(run_dir, dist.is_main, total, start_step, images_per_step, cfg.train.tensorboard)
    stats = Stats()
    clip = cfg.optim.grad_clip_norm
    stopper = Stopper(cfg.train.time_limit_minutes, dist)

    with stopper.catching_signals():  # a scheduler's SIGTERM ends the run as the time limit does
        for step_index in range(start_step, total):
            batch = build.to_device(next(batches), device, layout)
            if simulate is not None:
                batch = simulate(batch)
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
            if validate is not None and (done % cfg.train.validate_every_steps == 0 or last):
                scores, rows = validate(ema.modules[task.output_network], precision.autocast())
                logger.validation(done, scores, rows, cfg.train.num_samples)
            if done % cfg.train.checkpoint_every_steps == 0 or last:
                stats.check_finite()  # never checkpoint weights that a NaN has reached
                captured = state.capture(done, images_per_step)
                if dist.is_main:
                    save_checkpoint(run_dir, done, captured, keep=cfg.train.keep_checkpoints)
                dist.barrier()
            if last and done < total:
                log.warning("%s at step %d of %d: stopped with a checkpoint; `medgan train --resume` continues",
                            stopper.reason, done, total)  # fmt: skip
                break
    logger.close()
    return run_dir


def _start_run_folder(run_dir: str, cfg: TrainConfig, fresh: bool) -> None:
    """Create the run folder and write the resolved config into it (a fresh start drops a failed run's stats and
    sessions)."""
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the run folder ({err.strerror or err})", path=run_dir) from None
    with atomic_file(os.path.join(run_dir, "config.yaml"), overwrite=True) as temp, open(temp, "w") as fh:
        fh.write(dump_config(cfg))
    for name in ("stats.jsonl", "sessions.jsonl") if fresh else ():
        if os.path.exists(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))


def _memory(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {"gpu_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30}


def _set_lr(g_opt, g_lr: float, d_opt, d_lr: float, step_index: int, total: int, decay_start: float | None) -> None:
    """Constant, then (optionally) linear to 0 over the last part of training (pix2pix's schedule)."""
    factor = 1.0
    if decay_start is not None:
        first = int(decay_start * total)
        factor = min(1.0, (total - step_index) / max(total - first, 1))
    for opt, lr in ((g_opt, g_lr), (d_opt, d_lr)):
        for group in opt.param_groups:
            group["lr"] = lr * factor
