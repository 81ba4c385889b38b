"""A generator applied over a whole scan of any size: sliding windows with Gaussian blending.

    y = apply_to_scan(predict, {"source": x}, model_dims=2, window=[256, 256])   # x: [C, i, j, k]

The scan's inputs (`[C, *spatial]` tensors on one voxel grid, in the network's units) are cut into
windows of the training size; `predict` maps a batch of windows (a dict with the same keys) to
the network's output, and overlapping outputs are blended with Gaussian weights, so no seams
show. A 2D network runs over a volume slice by slice along `slice_axis`, each slice with its
`slab_slices` neighbours stacked as channels as in training (edge slices repeated), and keeps
the middle slice's channels. Synthesis and enhancement share this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["apply_to_scan"]


@torch.no_grad()
def apply_to_scan(
    predict: Callable[[dict[str, Tensor]], Tensor],  # a batch of windows -> the network's output for them
    inputs: Mapping[str, Tensor],  # [C_key, *spatial] each, one voxel grid
    model_dims: int,  # the network's spatial dims: 2 runs a volume slice by slice
    window: Sequence[int],  # voxels per axis of one window (the training image size)
    slice_axis: int = 2,  # 2D network on a volume: the axis slices are cut across
    slab_slices: int = 1,  # 2D network: neighbouring slices stacked as channels (odd)
    overlap: float = 0.25,  # fraction of a window shared with its neighbour, in [0, 1)
    batch_size: int = 8,  # windows (or slices) per call of `predict`
    device: str | torch.device = "cpu",
) -> Tensor:
    """`predict` over the whole scan; returns `[C_out, *spatial]` on the CPU in float32."""
    from monai.inferers import sliding_window_inference

    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap {overlap} must be in [0, 1)")
    keys = list(inputs)
    first = inputs[keys[0]]
    by_slice = model_dims == 2 and first.ndim == 4
    if by_slice:  # [C, ..., n, ...] -> [n, slab * C, a, b] per input
        stacked = {key: _slabs(value, slice_axis, slab_slices) for key, value in inputs.items()}
    else:
        stacked = {key: value[None] for key, value in inputs.items()}
    channels = [stacked[key].shape[1] for key in keys]
    joined = torch.cat([stacked[key].float() for key in keys], dim=1)  # one tensor for the window sampler

    def run(windows: Tensor) -> Tensor:
        parts = dict(zip(keys, windows.split(channels, dim=1), strict=True))
        return predict(parts).float()

    outputs = []
    for start in range(0, joined.shape[0], batch_size):
        chunk = joined[start : start + batch_size].to(device)
        y = sliding_window_inference(chunk, list(window), batch_size, run, overlap=overlap, mode="gaussian")
        outputs.append(y.float().cpu())
    y = torch.cat(outputs)
    if not by_slice:
        return y[0]
    per_slice = y.shape[1] // slab_slices
    middle = y[:, (slab_slices // 2) * per_slice : (slab_slices // 2 + 1) * per_slice]  # [n, C_out, a, b]
    return middle.movedim(0, 1 + slice_axis)  # the slices back along their axis: [C_out, i, j, k]


def _slabs(volume: Tensor, slice_axis: int, slab_slices: int) -> Tensor:
    """`[C, *spatial]` -> `[n, slab_slices * C, a, b]`: each slice with its neighbours (edge-clamped) as channels."""
    n, half = volume.shape[1 + slice_axis], slab_slices // 2
    moved = volume.movedim(1 + slice_axis, 0)  # [n, C, a, b]
    index = torch.arange(n)[:, None] + torch.arange(-half, half + 1)[None, :]
    return moved[index.clamp(0, n - 1)].flatten(1, 2)
