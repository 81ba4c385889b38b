"""Parameter and FLOP counts of a network, for model cards and the benchmark's TFLOP/s figure."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def _module_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    """Multiply-accumulates of one call of a convolution or linear layer, from its input and output shapes."""
    if hasattr(module, "macs"):
        return int(module.macs(inputs, output))
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # Every input voxel is scattered through the whole kernel into out_channels / groups channels.
        return inputs[0].numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvNd):
        return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def _counted(module: nn.Module) -> bool:
    return hasattr(module, "macs") or isinstance(module, nn.modules.conv._ConvNd | nn.Linear)


def example_inputs(model: nn.Module, input_shape: Sequence[int], device: torch.device) -> tuple:
    """Positional inputs of the right kind for `model` (by its `kind` attribute), of shape `input_shape`.

    Latent generators take z of shape (B, latent_dim); label-map generators an integer map (B, *spatial) or a
    one-hot map (B, num_labels, *spatial); everything else an image (B, C, *spatial). Class-conditional networks
    also get labels (all class 0).
    """
    shape = tuple(int(s) for s in input_shape)
    kind = getattr(model, "kind", None)
    labels = None
    if getattr(model, "num_classes", 0) > 0:
        labels = torch.zeros(shape[0], dtype=torch.long, device=device)
    if kind == "label":
        spatial_dims = model.spatial_dims
        if len(shape) == spatial_dims + 1:
            return (torch.randint(0, model.num_labels, shape, device=device),)
        return (torch.rand(shape, device=device),)
    x = torch.randn(shape, device=device)
    return (x,) if labels is None else (x, labels)


def describe(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Parameter count and forward FLOPs per sample of `model` for inputs of `input_shape` (batch first).

    FLOPs are 2 x the multiply-accumulates of every convolution, transposed convolution, linear and modulated
    layer, counted analytically by forward hooks from the shapes actually seen (normalisations, activations and
    elementwise ops are not counted: they are memory-bound, and leaving them out is the usual convention for
    model FLOPs). A training step costs about 3x the forward FLOPs. Works on a model built on the "meta" device,
    which makes it instant for full-size networks. The model's train/eval modes and state are left as they were:
    it runs once in eval mode without gradients.
    """
    reference = next(iter(model.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    inputs = example_inputs(model, input_shape, device)
    total = 0

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += _module_macs(module, args, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if _counted(m)]
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "flops_per_sample": 2 * total // max(int(input_shape[0]), 1),
    }
