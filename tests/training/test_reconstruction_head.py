"""The resnet discriminator's self-supervised reconstruction head (FastGAN): shapes, its error, its loss term,
that it learns, and that a run with it trains, logs it and resumes bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_trainer import QUIET, _tensors_equal

from medgan.errors import ConfigError
from medgan.models import build_discriminator
from medgan.tasks.checkpoint import checkpoint_paths, load_checkpoint
from medgan.training import losses, train
from medgan.training.objectives import OBJECTIVES
from medgan.training.precision import step


def _d(spatial_dims=2, image_size=32, **options):
    torch.manual_seed(0)
    return build_discriminator("resnet", spatial_dims=spatial_dims, image_size=image_size, base_channels=8,
                               max_channels=32, reconstruction_head=True, **options)  # fmt: skip


@pytest.mark.parametrize(("spatial_dims", "size", "levels", "expected"),
                         [(2, 64, 2, (32, 32)), (2, 32, 1, (16, 16)), (2, (64, 32), 2, (64, 32)),
                          (3, (32, 32, 16), 1, (32, 32, 16))])  # fmt: skip
def test_the_head_decodes_from_one_level_above_the_base_and_leaves_the_logits_alone(
    spatial_dims, size, levels, expected
):
    d = _d(spatial_dims, size, reconstruction_levels=levels)
    shape = (size,) * spatial_dims if isinstance(size, int) else size
    x = torch.randn(3, 1, *shape)
    logits, decoded = d(x, reconstruct=True)
    assert decoded.shape == (3, 1, *expected)
    assert torch.equal(logits, d(x))  # the logits do not depend on whether the head ran


def test_the_error_is_l1_to_the_input_average_pooled_to_the_heads_size():
    d = _d(image_size=64)
    x = torch.randn(2, 1, 64, 64)
    _, decoded = d(x, reconstruct=True)
    pooled = x.numpy().reshape(2, 1, 32, 2, 32, 2).mean(axis=(3, 5))  # 2x2 blocks, as numpy sees them
    expected = np.abs(decoded.detach().numpy() - pooled).mean()
    assert d.reconstruction_error(x, decoded).item() == pytest.approx(expected, rel=1e-5)


def test_wrong_uses_are_config_errors_naming_the_sizes():
    with pytest.raises(ConfigError, match=r"reconstruction_head=True"):
        build_discriminator("resnet", image_size=16, base_channels=8, max_channels=16)(
            torch.zeros(1, 1, 16, 16), reconstruct=True)  # fmt: skip
    with pytest.raises(ConfigError, match=r"\(8, 8\).*at least 16"):
        _d(image_size=8)
    with pytest.raises(ConfigError, match=r"reconstruction_levels \(3\) at most 2"):
        _d(image_size=32, reconstruction_levels=3)


def test_the_discriminator_loss_adds_the_weighted_error_on_real_images_only():
    nets = {"G": torch.nn.Identity(), "D": _d(image_size=16, reconstruction_levels=1)}
    real, fake = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 1, 16, 16) * 2 - 1
    for weight in (0.0, 2.5):
        objective = OBJECTIVES.build("unconditional", nets=nets, reconstruction_weight=weight)
        loss, stats = objective.d_loss({"image": real}, {"image": fake})
        logits_real, decoded = nets["D"](real, reconstruct=True)
        error = nets["D"].reconstruction_error(real, decoded)
        adversarial = losses.d_loss("logistic", logits_real, nets["D"](fake))
        assert loss.item() == pytest.approx((adversarial + weight * error).item(), rel=1e-5)
        assert stats["loss_recon"].item() == pytest.approx(error.item(), rel=1e-5)


def test_the_head_learns_to_redraw_a_fixed_batch():
    d = _d(image_size=16, reconstruction_levels=1)
    nets = {"G": torch.nn.Identity(), "D": d}
    objective = OBJECTIVES.build("unconditional", nets=nets)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    real = torch.stack([torch.sin(3 * xx + k) * torch.cos(2 * yy - k) for k in range(4)]).unsqueeze(1)
    opt = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.0, 0.99))
    errors = []
    for _ in range(40):
        loss, stats = objective.d_loss({"image": real}, {"image": -real})
        step(opt, loss, list(d.parameters()))
        errors.append(stats["loss_recon"].item())
    assert errors[-1] < 0.5 * errors[0]


def test_a_run_with_the_head_logs_its_error_and_resumes_bit_for_bit(tiny_config, tmp_path):
    common = (*QUIET, "discriminator.options.reconstruction_head=true", "discriminator.options.reconstruction_levels=1",
              "loss.d_reconstruction_weight=0.5", "train.checkpoint_every_steps=3", "loss.r1_interval_steps=2",
              "optim.lr_decay_start=null")  # fmt: skip
    train(tiny_config("unconditional", *common, "train.steps=6"), run_dir=str(tmp_path / "straight"))
    train(tiny_config("unconditional", *common, "train.steps=3"), run_dir=str(tmp_path / "resumed"))
    train(tiny_config("unconditional", *common, "train.steps=6"), run_dir=str(tmp_path / "resumed"), resume=True)
    straight = load_checkpoint(checkpoint_paths(str(tmp_path / "straight"))[-1])
    resumed = load_checkpoint(checkpoint_paths(str(tmp_path / "resumed"))[-1])
    assert any(k.startswith("reconstruction.") for k in straight["networks"]["D"])
    keys = ("networks", "ema", "optimizers", "ranks")
    assert _tensors_equal({k: straight[k] for k in keys}, {k: resumed[k] for k in keys}) == []
    stats = (tmp_path / "straight" / "stats.jsonl").read_text()
    assert "loss_recon" in stats


def test_the_reconstructing_forward_compiles_as_one_graph():
    """synth2d_256.yaml compiles its networks; the head's path must trace without a graph break."""
    d = _d(image_size=32)
    compiled = torch.compile(d, backend="aot_eager", fullgraph=True)
    x = torch.randn(4, 1, 32, 32)
    logits, decoded = compiled(x, None, reconstruct=True)
    (logits.sum() + d.reconstruction_error(x, decoded)).backward()
    assert decoded.shape == (4, 1, 32, 32) and d.reconstruction.to_image.weight.grad is not None
    torch._dynamo.reset()
