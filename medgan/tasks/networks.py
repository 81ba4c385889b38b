"""The one recipe that turns a config and a data record into a task's networks.

Training calls it with the data it just read, inference with the record a checkpoint stores, and
`check_networks` with provisional sizes on the meta device (no memory, no time), so a network
option or an image size that cannot work fails in seconds, before any data is read.

    nets = build_task_networks(cfg, record)                       # every network of the task
    generators = build_task_networks(cfg, record, generators_only=True)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from medgan.errors import ConfigError, describe
from medgan.tasks.base import TASKS, Task
from medgan.tasks.config import NetworkConfig, TrainConfig

__all__ = ["build_networks", "build_task_networks", "check_networks", "provisional_record"]


def build_task_networks(
    cfg: TrainConfig,
    record: Mapping[str, Any],  # the data record: channels, classes and labels fix the networks' sizes
    generators_only: bool = False,  # inference: the generators alone
    batch_size: int = 1,  # for the shape check of networks that take images
) -> dict[str, nn.Module]:
    """Build the networks of `cfg.task` for data described by `record`, checked against its shapes."""
    task: Task = TASKS.get(cfg.task)
    roles = task.generators() if generators_only else dict(task.roles)
    sizes = task.network_sizes(record)
    nets = build_networks(roles, sizes, cfg.generator, cfg.discriminator, cfg.data.spatial_dims,
                          cfg.data.image_size, batch_size)  # fmt: skip
    patch = cfg.data.degrade.patch_size if cfg.data.degrade is not None else None
    if patch:  # the networks train on patches of the degraded samples; the generators also run on whole ones
        for role, net in nets.items():
            name = (cfg.generator if roles[role] == "generator" else cfg.discriminator).name
            _check_shape(net, role, roles[role], name, sizes[role], cfg.data.spatial_dims, patch, batch_size)
    for role in task.generators():
        kind = getattr(nets.get(role), "kind", None)
        if role in nets and kind not in task.generator_kinds:
            raise ConfigError(f"task {task.name} needs a {' or '.join(task.generator_kinds)} generator, but "
                              f"generator {cfg.generator.name!r} is of kind {kind!r}")  # fmt: skip
    return nets


def provisional_record(cfg: TrainConfig) -> dict[str, Any]:
    """A stand-in data record with the sizes a config implies before any scan is read."""
    record: dict[str, Any] = {"channels": cfg.data.slab_slices, "image_channels": 1, "num_classes": 2, "num_labels": 2}
    record["domain_b"] = dict(record)  # a second domain (unpaired tasks)
    return record


def check_networks(cfg: TrainConfig) -> None:
    """Network names, options and the image size, checked in seconds before any data is read (and by
    `--dry-run`): the networks are built on the meta device with provisional channel and class counts.
    Only medgan's own ConfigError counts here: what may depend on the real sizes is left to the real build."""
    from medgan.models import DISCRIMINATORS, GENERATORS

    GENERATORS.get(cfg.generator.name)  # unknown names first, with the registry's did-you-mean
    DISCRIMINATORS.get(cfg.discriminator.name)
    with torch.device("meta"):
        try:
            build_task_networks(cfg, provisional_record(cfg))
        except ConfigError as err:
            raise err from None
        except Exception:  # a layer that cannot be built on meta: the real build checks it
            return


def build_networks(
    roles: Mapping[str, str],  # network name -> "generator" or "discriminator"
    sizes: Mapping[str, dict[str, Any]],  # network name -> sizes the data fixes (channels, classes)
    generator: NetworkConfig,
    discriminator: NetworkConfig,
    spatial_dims: int,
    image_size: list[int],
    batch_size: int,
) -> dict[str, nn.Module]:
    """Build every network of `roles` and check that each can take the data's shape."""
    from medgan.models import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator

    nets = {}
    for role, kind in roles.items():
        spec, registry, build = (
            (generator, GENERATORS, build_generator) if kind == "generator"
            else (discriminator, DISCRIMINATORS, build_discriminator)
        )  # fmt: skip
        known = {"spatial_dims": spatial_dims, "image_size": list(image_size), **sizes[role]}
        kwargs = _fill(registry.get(spec.name), dict(spec.options), known)
        try:
            net = build(spec.name, **kwargs)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ConfigError(f"{kind}.options {kwargs}: {describe(err, 160)}") from None
        _check_shape(net, role, kind, spec.name, sizes[role], spatial_dims, image_size, batch_size)
        nets[role] = net
    return nets


def _fill(builder: Any, options: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    """Add the sizes the data fixes to `options`, where the builder takes them and the user left them out."""
    params = inspect.signature(builder).parameters
    for key, value in known.items():
        if key in params and key not in options:
            options[key] = value
    return options


def _check_shape(net, role, kind, name, sizes, spatial_dims, image_size, batch_size) -> None:
    where = f"{kind} {name!r} ({role})"
    if getattr(net, "spatial_dims", spatial_dims) != spatial_dims:
        raise ConfigError(f"{where} is {net.spatial_dims}D but data.spatial_dims is {spatial_dims}")
    if getattr(net, "kind", None) == "latent" and kind == "generator":
        if list(net.image_size) != list(image_size):
            raise ConfigError(f"{where} makes images of size {list(net.image_size)} but data.image_size is "
                              f"{list(image_size)}; make them agree")  # fmt: skip
        return
    channels = sizes.get("in_channels") or sizes.get("num_labels")  # a label-map generator takes one-hot maps
    if channels is not None and hasattr(net, "check_input_size"):
        net.check_input_size((batch_size, channels, *image_size))  # raises ConfigError naming the fix
