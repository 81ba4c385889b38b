"""Wiring a config into the parts the loop uses: run folder, data, networks, optimizers.

Each function takes plain values and checks what it can up front, so a bad config fails in
seconds with one line (an unknown network, a shape a network cannot take, an empty data
folder) rather than minutes into a run.
"""

from __future__ import annotations

import inspect
import os
import re
from typing import Any

import torch
from torch import nn

from medgan.errors import ConfigError, InputError, OutputError, describe
from medgan.training.checkpoint import latest_checkpoint
from medgan.training.config import DataConfig, NetworkConfig, OptimConfig

__all__ = [
    "build_dataset",
    "build_networks",
    "check_network_names",
    "load_feature_network",
    "make_optimizer",
    "precheck_networks",
    "resolve_run_dir",
    "sample_spacing",
    "to_device",
]

_TASK_KEYS = {"conditional": "label", "pix2pix": "source", "label2image": "label_map"}


def resolve_run_dir(run_dir: str | None, resume: bool, name: str, root: str = "runs") -> str:
    """The run folder: given, or `runs/<name>-NNNNN` (the next number; the newest one to resume)."""
    if run_dir is None:
        pattern = re.compile(rf"^{re.escape(name)}-(\d{{5}})$")
        numbers = sorted(int(m.group(1)) for d in _listdir(root) if (m := pattern.match(d)))
        if resume:
            resumable = [n for n in numbers if latest_checkpoint(os.path.join(root, f"{name}-{n:05d}"))]
            if not resumable:
                raise InputError(f"no run of {name!r} with a checkpoint to resume; pass --run-dir", path=root)
            return os.path.join(root, f"{name}-{resumable[-1]:05d}")
        return os.path.join(root, f"{name}-{(numbers[-1] + 1) if numbers else 0:05d}")
    has_checkpoint = latest_checkpoint(run_dir) is not None
    if resume and not has_checkpoint:
        raise InputError("no checkpoint here to resume from; drop --resume to start a new run", path=run_dir)
    if not resume and has_checkpoint:
        raise InputError("this run folder already holds checkpoints; pass --resume, or choose another --run-dir",
                         path=run_dir)  # fmt: skip
    check_creatable(run_dir, "--run-dir")
    return run_dir


def check_creatable(folder: str, what: str) -> None:
    """Refuse, before any work, a folder that cannot be made: it, or its nearest existing ancestor, is a
    file, or that ancestor cannot be written to."""
    path = os.path.abspath(folder)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        where = "is a file" if path == os.path.abspath(folder) else f"lies under a file ({path})"
        raise OutputError(f"{where}, not a folder; choose another {what}", path=folder)
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"cannot be created or written: {path} is not writable; choose another {what}",
                          path=folder)  # fmt: skip


def _listdir(folder: str) -> list[str]:
    return os.listdir(folder) if os.path.isdir(folder) else []


def build_dataset(data: DataConfig, task: str, cache_dir: str) -> Any:
    """The training set of a task: a `ScanDataset`, or an `UnpairedDataset` of two for cyclegan."""
    from medgan.data.datasets import ScanDataset, UnpairedDataset, find_records

    records = find_records(data.source)
    needed = _TASK_KEYS.get(task)
    if needed and any(needed not in r for r in records):
        raise InputError(f"task {task} needs a CSV with a {needed!r} column for every row", path=data.source)
    options = {
        "spatial_dims": data.spatial_dims, "image_size": data.image_size, "spacing_mm": data.spacing_mm,
        "slice_axis": data.slice_axis, "slab_slices": data.slab_slices, "slice_range": data.slice_range,
        "min_foreground_fraction": data.min_foreground_fraction, "window_percentiles": data.window_percentiles,
        "crop": data.crop, "cache": data.cache,
    }  # fmt: skip
    dataset = ScanDataset(records, window=data.window, source_window=data.source_window,
                          cache_dir=os.path.join(cache_dir, "a"), **options)  # fmt: skip
    if task != "cyclegan":
        return dataset
    if not data.source_b:
        raise ConfigError("task cyclegan needs data.source_b: a folder or CSV of the second domain")
    other = ScanDataset(find_records(data.source_b), window=data.source_window, cache_dir=os.path.join(cache_dir, "b"),
                        **options)  # fmt: skip
    return UnpairedDataset(dataset, other)


def precheck_networks(
    roles: dict[str, str],
    sizes: dict[str, dict[str, Any]],
    generator: NetworkConfig,
    discriminator: NetworkConfig,
    spatial_dims: int,
    image_size: list[int],
) -> None:
    """Build the networks on the meta device (no memory, no time) with provisional data sizes, so that options
    or an image size a network cannot take fail in seconds, before the data is read and cached. Only medgan's
    own ConfigError counts here: anything that may depend on the real sizes is left to the real build."""
    with torch.device("meta"):
        try:
            build_networks(roles, sizes, generator, discriminator, spatial_dims, image_size, batch_size=1)
        except ConfigError as err:
            raise err from None
        except Exception:  # a layer that cannot be built on meta: the real build checks it
            return


def check_network_names(generator: NetworkConfig, discriminator: NetworkConfig) -> None:
    """Unknown names fail before any data is read (with the registry's did-you-mean)."""
    from medgan.models import DISCRIMINATORS, GENERATORS

    GENERATORS.get(generator.name)
    DISCRIMINATORS.get(discriminator.name)


def build_networks(
    roles: dict[str, str],  # network name -> "generator" or "discriminator"
    sizes: dict[str, dict[str, Any]],  # network name -> sizes the data fixes (channels, classes)
    generator: NetworkConfig,
    discriminator: NetworkConfig,
    spatial_dims: int,
    image_size: list[int],
    batch_size: int,
) -> dict[str, nn.Module]:
    """Build every network of a task and check that each can take the data's shape."""
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


def make_optimizer(params: list[nn.Parameter], lr: float, optim: OptimConfig, device: torch.device):
    """Adam(W); 'auto' uses the fused kernels on CUDA and CPU (one kernel over all tensors, the fastest there)."""
    fused = optim.fused is True or (optim.fused == "auto" and device.type in ("cuda", "cpu"))
    cls = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, betas=optim.betas, weight_decay=optim.weight_decay, fused=fused or None)


def load_feature_network(path: str | None, device: torch.device) -> nn.Module | None:
    """The user's feature network for the perceptual loss, frozen: a `torch.export` program (`.pt2`,
    `torch.export.save`) or a TorchScript file (`torch.jit.save`). Nothing is downloaded."""
    if not path:
        return None
    try:
        if path.endswith(".pt2"):
            network = torch.export.load(path).module().to(device)  # an exported graph has no train/eval modes
        else:
            network = torch.jit.load(path, map_location=device).eval()
    except (OSError, RuntimeError, ValueError) as err:
        raise InputError(
            f"not a loadable feature network (torch.export .pt2 or TorchScript; {describe(err, 120)})", path=path
        ) from None
    for param in network.parameters():
        param.requires_grad_(False)
    return network


def sample_spacing(record: dict[str, Any]) -> list[float]:
    """Voxel size (mm) along each axis of a training sample, for augmentations that think in mm."""
    return list(record["spacing_mm"])


def to_device(batch: dict[str, torch.Tensor], device: torch.device, layout: torch.memory_format) -> dict:
    """Move a batch to the device; images take the networks' memory layout (channels-last or not)."""
    out = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True)
        if value.is_floating_point() and value.ndim in (4, 5):
            value = value.contiguous(memory_format=layout)
        out[key] = value
    return out
