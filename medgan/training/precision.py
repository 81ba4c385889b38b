"""Device, numeric precision and memory layout: the only place that decides them.

- `bf16`: autocast to bfloat16, no loss scaling (its exponent range is float32's);
- `fp16`: autocast to float16 with a `GradScaler` per optimizer, which skips steps whose
  gradients overflowed;
- `fp32`: plain float32 (TF32 matrix units allowed on GPUs that have them).

`auto` picks bf16 only where the hardware computes it: an x86 CPU without AVX-512 emulates bfloat16
autocast, which trained the 64 x 64 recipe 10x slower than fp32 on one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from medgan.errors import ConfigError

__all__ = [
    "Precision",
    "configure_backends",
    "layout_of",
    "memory_format",
    "native_bf16",
    "requires_grad",
    "resolve_device",
    "resolve_precision",
    "step",
    "warn_if_emulated",
]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
log = logging.getLogger(__name__)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> this process's GPU when CUDA is there, else the CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA GPU is visible; set train.device=cpu or auto")
    if name in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 at speed: a CUDA GPU that supports it, or a CPU whose oneDNN kernels do
    (AVX-512 or Arm BF16). Elsewhere autocast emulates bfloat16, many times slower than float32."""
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # a PyTorch that does not yet count emulation as support
            return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> bf16 where the device runs it natively (`native_bf16`), else fp32. An explicit bf16 is kept,
    with a warning where it is emulated."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
    warn_if_emulated(name, device, "train.precision", "set train.precision=auto or fp32")
    return name


def warn_if_emulated(name: str, device: torch.device, option: str, fix: str) -> None:
    """One warning when `option` asks for bf16 on a CPU that can only emulate it."""
    if name == "bf16" and device.type == "cpu" and not native_bf16(device):
        log.warning("%s is bf16 but this CPU has no native bfloat16 (no AVX-512): autocast emulates it, about 10x "
                    "slower than fp32; %s", option, fix)  # fmt: skip


def memory_format(spatial_dims: int, enabled: bool) -> torch.memory_format:
    """channels_last (2D) or channels_last_3d (3D) when enabled: what tensor cores read fastest."""
    if not enabled:
        return torch.contiguous_format
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """The memory layout of an image batch (channels-last when the networks run that way)."""
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    if x.ndim == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
        return torch.channels_last_3d
    return torch.contiguous_format


def configure_backends(device: torch.device) -> None:
    """Global flags, set once by `train()`: TF32 matrix units and cuDNN autotuning on GPUs."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolution once


@dataclass
class Precision:
    """How forward passes run and how losses are scaled for one device."""

    name: str  # bf16, fp16 or fp32
    device: torch.device

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.name])

    def full(self) -> contextlib.AbstractContextManager:
        """A float32 region inside autocast (penalties that differentiate twice)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, enabled=False)

    def scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None


def step(
    optimizer: torch.optim.Optimizer,
    loss: Tensor,
    params: list[nn.Parameter],
    scaler: torch.amp.GradScaler | None = None,
    clip_norm: float | None = None,  # max gradient L2 norm over `params`; None: no clipping
) -> Tensor | None:
    """Backward (DDP averages gradients over processes), (unscale), (clip), optimizer step, zero grads.

    Returns the gradient norm if clipped."""
    (scaler.scale(loss) if scaler is not None else loss).backward()
    norm = None
    if clip_norm is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, clip_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


@contextlib.contextmanager
def requires_grad(modules: Iterable[nn.Module], flag: bool) -> Iterator[None]:
    """Switch gradients of `modules`' parameters on or off for a phase, then back on."""
    modules = list(modules)
    for module in modules:
        module.requires_grad_(flag)
    try:
        yield
    finally:
        for module in modules:
            module.requires_grad_(True)
