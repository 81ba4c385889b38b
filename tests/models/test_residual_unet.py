"""The U-Net's residual option: the network learns a correction added to its input (denoisers)."""

from __future__ import annotations

import pytest
import torch

from medgan.errors import ConfigError
from medgan.models import build_generator


@pytest.mark.parametrize("dims", [2, 3])
def test_a_residual_unet_returns_its_input_where_it_corrects_nothing(dims):
    net = build_generator("unet", spatial_dims=dims, channels=4, max_channels=8, depth=2, residual=True).eval()
    x = torch.rand(2, 1, *([8] * dims)) * 1.6 - 0.8
    for param in net.final.parameters():
        torch.nn.init.zeros_(param)
    assert torch.equal(net(x), x)
    torch.nn.init.constant_(net.final.conv.bias, 0.5)
    assert torch.allclose(net(x), (x + 0.5).clamp(-1, 1))  # tanh's range kept by clamping


def test_inpainting_inputs_add_their_image_channels_and_too_few_channels_are_refused():
    net = build_generator("unet", in_channels=2, out_channels=1, channels=4, max_channels=8, depth=2, residual=True)
    for param in net.final.parameters():
        torch.nn.init.zeros_(param)
    x = torch.rand(1, 2, 8, 8)
    assert torch.equal(net(x), x[:, :1])  # the image channel, not the mask channel
    with pytest.raises(ConfigError, match="in_channels .1. must be at least out_channels .2."):
        build_generator("unet", in_channels=1, out_channels=2, residual=True)
