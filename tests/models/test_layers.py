"""Shared layers, shape checks and the FLOP counter, each against an independent computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator
from torch import nn

from medgan.errors import ConfigError
from medgan.models import describe
from medgan.models.discriminators import _patch_output_size
from medgan.models.layers import (
    EqualizedConv,
    EqualizedLinear,
    MinibatchStd,
    ModulatedConv,
    apply_spectral_norm,
    one_hot,
)
from medgan.models.shapes import check_multiple, pyramid_plan


def reference_modconv(x, weight, styles, demodulate):
    """StyleGAN2's definition, one sample at a time: w'[o,i,k] = w[o,i,k] s[i], divided by ||w'[o]||."""
    conv = F.conv2d if x.dim() == 4 else F.conv3d
    outs = []
    for b in range(x.shape[0]):
        w = weight * styles[b].view(1, -1, *([1] * (weight.dim() - 2)))
        if demodulate:
            w = w / w.flatten(1).norm(dim=1).view(-1, *([1] * (weight.dim() - 1)))
        outs.append(conv(x[b : b + 1], w, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("fused", [False, True])
def test_modulated_conv_matches_per_sample_definition(spatial_dims, demodulate, fused):
    torch.manual_seed(0)
    layer = ModulatedConv(spatial_dims, 4, 6, 3, style_dim=5, demodulate=demodulate, fused=fused).double()
    x = torch.randn(3, 4, *([6] * spatial_dims), dtype=torch.double)
    w = torch.randn(3, 5, dtype=torch.double)
    styles = layer.affine(w)
    expected = reference_modconv(x, layer.weight * layer.weight_gain, styles, demodulate)
    torch.testing.assert_close(layer(x, w), expected, rtol=1e-6, atol=1e-5)  # demodulation eps is 1e-8


def test_demodulated_output_has_unit_scale_whatever_the_style():
    torch.manual_seed(0)
    layer = ModulatedConv(2, 64, 64, 3, style_dim=8)
    x = torch.randn(4, 64, 16, 16)
    for scale in (0.1, 10.0):
        with torch.no_grad():
            y = layer(x, torch.randn(4, 8) * scale)
        assert 0.7 < y[..., 2:-2, 2:-2].std().item() < 1.3  # interior: no zero padding


def test_minibatch_std_sees_batch_diversity():
    layer = MinibatchStd(group_size=4, num_channels=1)
    same = torch.randn(1, 3, 5, 5).repeat(4, 1, 1, 1)
    out = layer(same)
    assert out.shape == (4, 4, 5, 5)
    torch.testing.assert_close(out[:, :3], same)
    assert out[:, 3].abs().max().item() < 1e-3  # sqrt(eps): no diversity
    diverse = torch.randn(4, 3, 5, 5)
    expected = diverse.std(dim=0, unbiased=False).mean()
    torch.testing.assert_close(layer(diverse)[:, 3], expected.expand(4, 5, 5), rtol=1e-4, atol=1e-4)
    # a batch of 6 is split into groups of 3 (the largest divisor of 6 not above 4), each with its own value
    out6 = layer(torch.randn(6, 3, 5, 5))[:, 3, 0, 0]
    assert out6.shape == (6,) and not torch.allclose(out6[0], out6[1])
    torch.testing.assert_close(out6[0], out6[2])  # samples 0, 2, 4 share a group (group index = sample % 2)
    torch.testing.assert_close(out6[0], out6[4])


def test_equalized_layers_have_unit_effective_variance_gain():
    torch.manual_seed(0)
    linear = EqualizedLinear(512, 512)
    conv = EqualizedConv(3, 32, 32, 3)
    x = torch.randn(256, 512)
    assert 0.9 < linear(x).std().item() < 1.1
    assert 0.9 < conv(torch.randn(2, 32, 8, 8, 8))[..., 1:-1, 1:-1, 1:-1].std().item() < 1.1
    slow = EqualizedLinear(512, 512, lr_multiplier=0.01)
    assert 0.9 < slow(x).std().item() < 1.1  # the same function at init, only its learning rate differs
    assert slow.weight.std().item() > 50  # stored 1/lr_multiplier larger, so Adam's steps are 100x smaller


def test_spectral_norm_bounds_the_top_singular_value():
    torch.manual_seed(0)
    model = apply_spectral_norm(nn.Sequential(nn.Linear(20, 30), EqualizedConv(2, 4, 8, 3, equalized=False)))
    for _ in range(20):  # power iterations run in training-mode forwards
        model[0](torch.randn(2, 20))
        model[1](torch.randn(2, 4, 5, 5))
    for layer in model:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2).item()
        assert abs(sigma - 1.0) < 1e-2


def test_one_hot_matches_torch():
    labels = torch.randint(0, 5, (2, 3, 4, 6))
    expected = F.one_hot(labels, 5).movedim(-1, 1).float()
    torch.testing.assert_close(one_hot(labels, 5), expected)


def test_pyramid_plan_and_its_message():
    assert pyramid_plan((256, 256), "g") == ((4, 4), 6)
    assert pyramid_plan((128, 128, 128), "g") == ((4, 4, 4), 5)
    assert pyramid_plan((256, 128), "g") == ((8, 4), 5)
    assert pyramid_plan((4,), "g") == ((4,), 0)
    for bad, suggestion in (((100, 100), "64 or 128"), ((256, 96), "64 or 128"), ((2, 2), "4 or 8")):
        with pytest.raises(ConfigError) as info:
            pyramid_plan(bad, "stylegan generator")
        assert str(bad) in str(info.value) and suggestion in str(info.value) and "4 * 2^n" in str(info.value)


def test_check_multiple_suggests_neighbours():
    check_multiple((96, 128), 32, "unet", "depth 5")
    with pytest.raises(ConfigError, match=r"\(100, 128\).*multiple of 32.*use 96 or 128 instead of 100"):
        check_multiple((100, 128), 32, "unet", "depth 5")
    with pytest.raises(ConfigError, match="at least 8.*use 8 instead of 4"):
        check_multiple((4,), 4, "resnet", "reflect", minimum=8)


def test_describe_counts_match_a_hand_count():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # out 4x8x8, 1*9 MACs each: 2304
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2),  # out 8x4x4, (4/2)*9 MACs each: 2304
        nn.ConvTranspose2d(8, 2, 2, stride=2),  # in 8x4x4 scattered into 2 channels x 4 taps: 1024
        nn.Flatten(),
        nn.Linear(2 * 8 * 8, 10),  # 1280
    )
    result = describe(model, (3, 1, 8, 8))
    assert result["flops_per_sample"] == 2 * (2304 + 2304 + 1024 + 1280)
    assert result["params"] == (36 + 4) + (8 * 2 * 9 + 8) + (8 * 2 * 4 + 2) + (128 * 10 + 10)


def test_describe_counts_custom_layers_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm2d(3)
            self.mod = ModulatedConv(2, 3, 5, 3, style_dim=7)  # affine 7->3: 3*7; conv 5x6x6 x 3*9

        def forward(self, x):
            return self.mod(self.norm(x), torch.ones(x.shape[0], 7))

    model = Tiny().train()
    result = describe(model, (2, 3, 6, 6))
    assert result["flops_per_sample"] == 2 * (3 * 7 + 5 * 36 * 27)
    assert model.training and model.norm.training
    assert model.norm.num_batches_tracked.item() == 0  # ran in eval mode: running statistics untouched


def test_describe_works_on_meta_device():
    with torch.device("meta"):
        model = nn.Conv3d(2, 4, 3, padding=1)
    result = describe(model, (1, 2, 64, 64, 64))
    assert result["flops_per_sample"] == 2 * 4 * 64**3 * 2 * 27
    assert math.isclose(result["params"], 4 * 2 * 27 + 4)


@pytest.mark.parametrize(("num_layers", "kernel_size", "last_kernel_size"), [(3, 4, 4), (2, 4, 4), (4, 4, 1)])
def test_patch_output_size_matches_monai(num_layers, kernel_size, last_kernel_size):
    """check_input_size of the PatchGAN wrappers predicts MONAI's output size, including where it reaches 0."""
    net = PatchDiscriminator(
        spatial_dims=2,
        channels=2,
        in_channels=1,
        num_layers_d=num_layers,
        kernel_size=kernel_size,
        padding=(kernel_size - 1) // 2,
        last_conv_kernel_size=last_kernel_size,
        norm=None,
    ).eval()
    for size in range(1, 50):
        try:
            actual = net(torch.zeros(1, 1, size, size))[-1].shape[-1]
        except RuntimeError:  # a layer's input got smaller than its kernel
            actual = 0
        assert _patch_output_size(size, num_layers, kernel_size, last_kernel_size) == actual, size
