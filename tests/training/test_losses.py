"""Each loss against values worked out by hand on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch

from medgan.errors import ConfigError
from medgan.training import losses

REAL = torch.tensor([2.0, 0.0])
FAKE = torch.tensor([-1.0, 1.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(
    ("kind", "d_expected", "g_expected"),
    [
        # logistic: mean softplus(-real) + mean softplus(fake); G: mean softplus(-fake)
        (
            "logistic",
            (softplus(-2) + softplus(0)) / 2 + (softplus(-1) + softplus(1)) / 2,
            (softplus(1) + softplus(-1)) / 2,
        ),
        # hinge: mean relu(1 - real) + mean relu(1 + fake) = (0 + 1)/2 + (0 + 2)/2; G: -mean fake = 0
        ("hinge", 0.5 + 1.0, 0.0),
        # lsgan: 0.5 * (mean (real-1)^2 + mean fake^2) = 0.5 * ((1 + 1)/2 + (1 + 1)/2); G: mean (fake-1)^2 = (4 + 0)/2
        ("lsgan", 1.0, 2.0),
        # wgan: mean fake - mean real = 0 - 1; G: -mean fake = 0
        ("wgan-gp", -1.0, 0.0),
    ],
)
def test_gan_losses_by_hand(kind, d_expected, g_expected):
    assert losses.d_loss(kind, REAL, FAKE).item() == pytest.approx(d_expected, rel=1e-6)
    assert losses.g_loss(kind, FAKE).item() == pytest.approx(g_expected, abs=1e-6)


def test_lists_of_logit_maps_average_over_scales():
    real = [torch.full((1, 1, 2, 2), 2.0), torch.zeros(1, 1, 1, 1)]
    fake = [torch.full((1, 1, 2, 2), -1.0), torch.ones(1, 1, 1, 1)]
    assert losses.d_loss("hinge", real, fake).item() == pytest.approx((0 + 1) / 2 + (0 + 2) / 2)
    assert losses.g_loss("lsgan", fake).item() == pytest.approx((4 + 0) / 2)


def test_unknown_loss_is_a_config_error():
    with pytest.raises(ConfigError, match="valid: logistic"):
        losses.d_loss("wasserstein", REAL, FAKE)


def test_r1_of_a_linear_discriminator_is_its_weight_norm():
    # D(x) = sum(w * x): grad_x = w for every sample, so R1 = |w|^2 whatever x is.
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    x = torch.randn(3, 1, 2, 2, requires_grad=True)
    logits = (x * w).flatten(1).sum(1)
    assert losses.r1_penalty(logits, x).item() == pytest.approx(float((w**2).sum()))


def test_r1_penalty_has_a_gradient_for_the_discriminator():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    x = torch.randn(4, 2, requires_grad=True)
    losses.r1_penalty((x * w).sum(1), x).backward()
    assert torch.allclose(w.grad, 2 * w.detach())  # d|w|^2/dw = 2w


def test_gradient_penalty_is_zero_for_a_unit_norm_critic_and_positive_otherwise():
    unit = torch.tensor([0.6, 0.8])  # |grad| = 1 everywhere
    real, fake = torch.randn(5, 2), torch.randn(5, 2)
    assert losses.gradient_penalty(lambda x: (x * unit).sum(1), real, fake).item() == pytest.approx(0.0, abs=1e-12)
    steep = 3 * unit  # |grad| = 3: penalty (3 - 1)^2 = 4
    assert losses.gradient_penalty(lambda x: (x * steep).sum(1), real, fake).item() == pytest.approx(4.0)


def test_reconstruction_losses():
    out, target = torch.tensor([1.0, -1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    assert losses.reconstruction_loss("l1", out, target).item() == pytest.approx((1 + 2 + 0) / 3)
    assert losses.reconstruction_loss("l2", out, target).item() == pytest.approx((1 + 4 + 0) / 3)
    with pytest.raises(ConfigError):
        losses.reconstruction_loss("l3", out, target)


def test_feature_matching_averages_layers_and_scales():
    real = [[torch.zeros(2), torch.ones(2)], [torch.zeros(1)]]
    fake = [[torch.ones(2), torch.ones(2)], [torch.full((1,), 3.0)]]
    assert losses.feature_matching_loss(real, fake).item() == pytest.approx((1 + 0 + 3) / 3)


def test_feature_loss_uses_the_given_network_and_trains_only_through_the_output():
    net = torch.nn.Conv2d(1, 2, 1, bias=False)
    torch.nn.init.constant_(net.weight, 2.0)
    out = torch.ones(1, 1, 2, 2, requires_grad=True)
    target = torch.zeros(1, 1, 2, 2, requires_grad=True)
    loss = losses.feature_loss(net, out, target)
    assert loss.item() == pytest.approx(2.0)  # features 2 vs 0 everywhere
    loss.backward()
    assert out.grad is not None and target.grad is None


def test_the_image_pool_passes_fakes_until_full_then_swaps_half_and_resumes_exactly():
    from medgan.training.objectives.cyclegan import ImagePool

    pool = ImagePool(4, seed=0)
    first = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    assert torch.equal(pool(first), first)  # filling: shown as they are
    shown = [pool(torch.full((1, 1, 2, 2), 100.0 + k))[0, 0, 0, 0].item() for k in range(400)]
    older = [value for k, value in enumerate(shown) if value != 100.0 + k]
    assert 0.43 < len(older) / 400 < 0.57, len(older)  # swapped for a stored one with probability 1/2
    assert all(value <= 100.0 + k for k, value in enumerate(shown))  # a swapped-in one is always older
    assert len(set(older)) == len(older)  # a stored image is shown once, then replaced
    twin = ImagePool(4, seed=123)
    twin.load_state_dict(pool.state_dict(), torch.device("cpu"))
    batch = torch.rand(8, 1, 2, 2).contiguous(memory_format=torch.channels_last)
    out = pool(batch)
    assert torch.equal(out, twin(batch)) and out.is_contiguous(memory_format=torch.channels_last)
    assert ImagePool(0, seed=0)(batch) is batch  # size 0: off
