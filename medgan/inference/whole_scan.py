"""A generator applied over a whole scan of any size: sliding windows with Gaussian blending.

    y = apply_to_scan(predict, {"source": x}, model_dims=2, window=[256, 256])   # x: [C, i, j, k]

The scan's inputs (`[C, *spatial]` tensors on one voxel grid, in the network's units) are cut into
windows of the training size; `predict` maps a batch of windows (a dict with the same keys) to
the network's output, and overlapping outputs are blended with Gaussian weights, so no seams
show. A 2D network runs over a volume slice by slice along `slice_axis`, each slice with its
`slab_slices` neighbours stacked as channels as in training (edge slices repeated), and keeps
the middle slice's channels. Synthesis and enhancement share this module.

The windows follow MONAI's `sliding_window_inference(mode="gaussian")` rule, so both give the same
result to float rounding (a test holds them to it): window starts `int(window * (1 - overlap))`
apart with the last one flush with the border, one importance map (a Gaussian of sigma = window / 8,
clamped away from 0) shared by every window, and a scan smaller than a window padded with a
constant and cropped back. What differs is the work around the network: the positions, the map and
the sum of the maps (built axis by axis, not window by window) are computed once; windows of
every slice or image are gathered into full batches; each output is multiplied by the map and
added in place in one fused step; the network runs under `torch.inference_mode`, in bf16 autocast
when asked (channels-last windows too), with cuDNN tuning its kernels for the window's fixed shape. A
scan too large for the GPU stays on the CPU and its windows are streamed through pinned memory; the
blended output stays on the GPU when it fits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PRECISIONS", "apply_to_scan", "blend_windows", "importance_map", "placement", "to_channels_last",
           "window_starts"]  # fmt: skip

PRECISIONS = ("fp32", "bf16")
SIGMA_SCALE = 0.125  # Gaussian sigma as a fraction of the window, per axis (MONAI's default)
MIN_WEIGHT = 1e-3  # the importance map's floor, so that the border voxels of a window still count
# Of the GPU memory free at the start, what the blended output and the scan may take; the rest is
# left to the network's activations, which grow with the batch.
OUTPUT_SHARE = 0.4
INPUT_SHARE = 0.2


def apply_to_scan(
    predict: Callable[[dict[str, Tensor]], Tensor],  # a batch of windows -> the network's output for them
    inputs: Mapping[str, Tensor],  # [C_key, *spatial] each, one voxel grid
    model_dims: int,  # the network's spatial dims: 2 runs a volume slice by slice
    window: Sequence[int],  # voxels per axis of one window (the training image size)
    slice_axis: int = 2,  # 2D network on a volume: the axis slices are cut across
    slab_slices: int = 1,  # 2D network: neighbouring slices stacked as channels (odd)
    overlap: float = 0.25,  # fraction of a window shared with its neighbour, in [0, 1)
    batch_size: int = 8,  # windows per call of `predict` (across slices too)
    device: str | torch.device = "cpu",
    *,
    precision: str = "fp32",  # fp32, or bf16 autocast around `predict`
    pad_value: float = 0.0,  # fills a scan smaller than the window (network units; MONAI pads with 0)
    accumulate_on: str = "auto",  # where outputs are blended: auto (the device when it fits), device, cpu
    channels_last: bool = False,  # windows in channels-last layout (pair it with `to_channels_last(net)`)
    memory_bytes: int | None = None,  # GPU memory the scan and the output may share; None: what is free
) -> Tensor:
    """`predict` over the whole scan; returns `[C_out, *spatial]` on the CPU in float32."""
    keys = list(inputs)
    first = inputs[keys[0]]
    by_slice = model_dims == 2 and first.ndim == 4
    if by_slice:  # [C, ..., n, ...] -> [n, slab * C, a, b] per input
        stacked = {key: _slabs(value, slice_axis, slab_slices) for key, value in inputs.items()}
    else:
        stacked = {key: value[None] for key, value in inputs.items()}
    channels = [stacked[key].shape[1] for key in keys]
    # One tensor for the window sampler; a view of a float scan given alone, so a large volume is not copied.
    joined = stacked[keys[0]].float() if len(keys) == 1 else torch.cat([stacked[k].float() for k in keys], dim=1)

    def run(windows: Tensor) -> Tensor:
        return predict(dict(zip(keys, windows.split(channels, dim=1), strict=True)))

    y = blend_windows(joined, window, run, overlap, batch_size, device, precision=precision, pad_value=pad_value,
                      accumulate_on=accumulate_on, channels_last=channels_last, memory_bytes=memory_bytes,
                      keep_middle_of=slab_slices if by_slice else 1)  # fmt: skip
    if not by_slice:
        return y[0]
    return y.movedim(0, 1 + slice_axis).contiguous()  # the slices back along their axis: [C_out, i, j, k]


def blend_windows(
    images: Tensor,  # [N, C, *spatial]: N images (or slices) of one size, on the CPU or the device
    window: Sequence[int],  # voxels per spatial axis of one window
    run: Callable[[Tensor], Tensor],  # [B, C, *window] -> [B, C_out, *window]
    overlap: float = 0.25,  # fraction of a window shared with its neighbour, in [0, 1)
    batch_size: int = 8,  # windows per call of `run`
    device: str | torch.device = "cpu",  # where `run` computes
    *,
    precision: str = "fp32",  # fp32, or bf16 autocast around `run`
    pad_value: float = 0.0,  # fills images smaller than the window, before they are cropped back
    accumulate_on: str = "auto",  # auto, device or cpu
    channels_last: bool = False,  # windows in channels-last layout
    memory_bytes: int | None = None,  # GPU memory the scan and the output may share; None: what is free
    to_cpu: bool = True,  # False: the result stays where it was blended
    keep_middle_of: int = 1,  # > 1: `run` returns this many slices' channels; blend only the middle one's
) -> Tensor:
    """Gaussian-blended sliding-window output of `run` over every image: `[N, C_out, *spatial]` in float32, on the
    CPU (or, with `to_cpu=False`, where it was blended)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # tensors report cuda:N; compare like with like
        device = torch.device("cuda", torch.cuda.current_device())
    dims, size = images.ndim - 2, tuple(images.shape[2:])
    window = tuple(int(w) for w in window)
    if len(window) != dims or min(window) < 1:
        raise ValueError(f"a window of {dims} positive sizes is needed for images of shape {tuple(images.shape)}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap {overlap} must be in [0, 1)")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if batch_size < 1:
        raise ValueError("the batch size must be at least 1")
    # A scan smaller than the window is padded evenly (the odd voxel after it) and cropped back at the end.
    pads = [(max(w - s, 0) // 2, max(w - s, 0) - max(w - s, 0) // 2) for s, w in zip(size, window, strict=True)]
    padded = tuple(s + a + b for s, (a, b) in zip(size, pads, strict=True))
    starts = [window_starts(n, w, overlap) for n, w in zip(padded, window, strict=True)]
    positions = list(itertools.product(*starts))  # the last axis fastest, as MONAI orders them

    source = _padded(images, pads, pad_value) if any(a or b for a, b in pads) else images
    jobs = [(n, p) for n in range(images.shape[0]) for p in positions]
    out = weight = product_weight = None
    with torch.no_grad(), _cudnn_autotune(device):
        for begin in range(0, len(jobs), batch_size):
            chunk = jobs[begin : begin + batch_size]
            y = _run_batch(source, chunk, window, run, device, precision, channels_last, keep_middle_of)
            if out is None:  # the output's channels are known now: place the scan and the output
                free = memory_bytes if memory_bytes is not None else \
                    torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0  # fmt: skip
                voxels = images.shape[0] * math.prod(padded)
                input_here, output_here = placement(device, 4 * voxels * images.shape[1], 4 * voxels * y.shape[1],
                                                    free, accumulate_on)  # fmt: skip
                target = device if output_here else torch.device("cpu")
                source = source.to(device) if input_here else source
                weight = importance_map(window, device=target)
                product_weight = weight if target == device else importance_map(window, device=device)
                out = torch.zeros((images.shape[0], y.shape[1], *padded), dtype=torch.float32, device=target)
            _accumulate(out, y, chunk, window, weight, product_weight)
        out /= weight_sum(weight, starts, padded)
    crop = tuple(slice(a, a + s) for (a, _), s in zip(pads, size, strict=True))
    out = out[(slice(None), slice(None), *crop)]
    return out.cpu() if to_cpu else out


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """First voxels of the windows along one axis of `size` voxels (>= window): `int(window * (1 - overlap))`
    apart (at least 1), the last one flush with the border, one window when it spans the axis exactly."""
    step = window if window == size else max(1, int(window * (1 - overlap)))
    count = next(d for d in range(size) if d * step + window >= size) + 1
    return [min(d * step, size - window) for d in range(count)]


def importance_map(window: Sequence[int], sigma_scale: float = SIGMA_SCALE,
                   device: str | torch.device = "cpu") -> Tensor:  # fmt: skip
    """A window's blending weights: the product of 1D Gaussians of sigma `sigma_scale * window` centred on it,
    values under max(min, 1e-3) raised to that floor; float32, the same values as MONAI's gaussian mode."""
    weight = None
    for axis, n in enumerate(window):
        x = torch.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=torch.float32, device=device)
        g = torch.exp(x**2 / (-2 * (n * sigma_scale) ** 2))
        weight = g if weight is None else weight.unsqueeze(-1) * g[(None,) * axis]
    return weight.clamp_(min=max(weight.min().item(), MIN_WEIGHT))


def weight_sum(weight: Tensor, starts: Sequence[Sequence[int]], size: Sequence[int]) -> Tensor:
    """The sum of `weight` placed at every window position (the product of `starts`) over a grid of `size`.

    Shifts along different axes commute, so the sum over the product of positions is one pass per axis:
    all shifts along the last axis of the window, then along the one before on that result, and so on,
    at a fraction of the cost of adding the full map once per window.
    """
    total = weight
    for axis in reversed(range(weight.ndim)):
        shape = list(total.shape)
        shape[axis] = size[axis]
        grown = torch.zeros(shape, dtype=total.dtype, device=total.device)
        for start in starts[axis]:
            grown.narrow(axis, start, weight.shape[axis]).add_(total)
        total = grown
    return total


def placement(device: torch.device, input_bytes: int, output_bytes: int, free_bytes: int,
              accumulate_on: str = "auto") -> tuple[bool, bool]:  # fmt: skip
    """(the scan goes to `device` whole, the blended output stays on `device`). On the CPU both. On a GPU the
    output stays when it takes at most OUTPUT_SHARE of the free memory (or `accumulate_on` says where), and
    the scan is copied over when it also fits in INPUT_SHARE; otherwise windows stream from the CPU."""
    if accumulate_on not in ("auto", "device", "cpu"):
        raise ValueError(f"accumulate_on {accumulate_on!r} is not one of auto, device, cpu")
    if device.type == "cpu":
        return True, True
    output_here = accumulate_on == "device" or (accumulate_on == "auto" and output_bytes <= OUTPUT_SHARE * free_bytes)
    left = free_bytes - (output_bytes if output_here else 0)
    return input_bytes <= INPUT_SHARE * max(left, 0), output_here


def to_channels_last(net: nn.Module, spatial_dims: int) -> nn.Module:
    """`net` with its weights in channels-last layout (in place), the layout cuDNN's bf16 kernels prefer."""
    return net.to(memory_format=torch.channels_last if spatial_dims == 2 else torch.channels_last_3d)


def _run_batch(source: Tensor, chunk, window, run, device: torch.device, precision: str, channels_last: bool,
               keep_middle_of: int) -> Tensor:  # fmt: skip
    """`run` on the windows of `chunk` ((image, start) pairs), gathered from `source` into one batch on `device`."""
    views = [source[(n, slice(None), *(slice(s, s + w) for s, w in zip(start, window, strict=True)))]
             for n, start in chunk]  # fmt: skip
    if source.device == device:
        batch = torch.stack(views)
    else:  # streamed: gathered into pinned memory, copied while the CPU goes on
        pinned = torch.empty((len(views), *views[0].shape), dtype=views[0].dtype, pin_memory=device.type == "cuda")
        batch = torch.stack(views, out=pinned).to(device, non_blocking=True)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last if batch.ndim == 4 else torch.channels_last_3d)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        y = run(batch)
    if tuple(y.shape[2:]) != tuple(window) or y.shape[0] != len(chunk):
        raise ValueError(f"the network returned {tuple(y.shape)} for windows of {tuple(batch.shape)}: whole-scan "
                         "inference needs an output of the window's size")  # fmt: skip
    if keep_middle_of > 1:
        per_slice = y.shape[1] // keep_middle_of
        y = y[:, (keep_middle_of // 2) * per_slice : (keep_middle_of // 2 + 1) * per_slice]
    return y


def _padded(source: Tensor, pads, pad_value: float) -> Tensor:
    flat = [v for a, b in reversed(pads) for v in (a, b)]  # F.pad wants the last axis first
    return F.pad(source, flat, mode="constant", value=pad_value)


def _accumulate(out: Tensor, y: Tensor, chunk, window, weight: Tensor, product_weight: Tensor) -> None:
    """Add each window's output times the map into `out`, in place (one fused multiply-add per window).
    `product_weight` is the map on `y`'s device, where outputs blended on the CPU are weighted first."""
    if y.device != out.device:  # weighted on the device, so only one product crosses to the CPU
        y = (y.float() * product_weight).to(out.device)
        for b, (n, start) in enumerate(chunk):
            out[(n, slice(None), *(slice(s, s + w) for s, w in zip(start, window, strict=True)))] += y[b]
        return
    for b, (n, start) in enumerate(chunk):
        out[(n, slice(None), *(slice(s, s + w) for s, w in zip(start, window, strict=True)))].addcmul_(y[b], weight)


class _cudnn_autotune:
    """cuDNN picks its fastest kernels for the window's fixed shape while the windows run (restored after)."""

    def __init__(self, device: torch.device):
        self.active = device.type == "cuda"

    def __enter__(self) -> None:
        if self.active:
            self.previous = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = True

    def __exit__(self, *exc) -> None:
        if self.active:
            torch.backends.cudnn.benchmark = self.previous


def _slabs(volume: Tensor, slice_axis: int, slab_slices: int) -> Tensor:
    """`[C, *spatial]` -> `[n, slab_slices * C, a, b]`: each slice with its neighbours (edge-clamped) as channels."""
    moved = volume.movedim(1 + slice_axis, 0)  # [n, C, a, b], a view
    if slab_slices == 1:
        return moved
    n, half = moved.shape[0], slab_slices // 2
    index = torch.arange(n)[:, None] + torch.arange(-half, half + 1)[None, :]
    return moved[index.clamp(0, n - 1)].flatten(1, 2)
