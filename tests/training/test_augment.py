"""Augmentations: differentiable, shape- and geometry-preserving, replayable; ADA moves p the right way."""

from __future__ import annotations

import pytest
import torch

from medgan.errors import ConfigError
from medgan.training.augment import OPS, Augment, apply, rot90_planes


def point_image(shape, at, batch=2):
    x = torch.full((batch, 1, *shape), -1.0)
    x[(slice(None), 0, *at)] = 1.0
    return x


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("op", OPS)
def test_every_op_keeps_shape_and_passes_gradients(op, dims):
    shape = (8,) * dims
    augment = Augment(dims, [op], p=1.0, seed=1)
    x = torch.randn(4, 2, *shape, requires_grad=True)
    y = augment(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_same_record_same_output_and_p_zero_is_identity():
    augment = Augment(3, OPS, p=0.7, spacing_mm=(1.0, 1.0, 1.0), seed=3)
    x = torch.randn(3, 1, 8, 8, 8)
    record = augment.sample(x.shape)
    assert torch.equal(apply(x, record), apply(x, record))
    assert torch.equal(Augment(3, OPS, p=0.0)(x), x)
    again = Augment(3, OPS, p=0.7, spacing_mm=(1.0, 1.0, 1.0), seed=3)
    assert torch.equal(again(x), apply(x, record))  # same seed, same draws


def test_flip_mirrors_and_translate_moves_by_whole_voxels():
    x = point_image((8, 8), (1, 2))
    flipped = apply(x, {"flip": torch.tensor([[True, False], [False, False]])})
    assert flipped[0, 0, 6, 2] == 1 and flipped[1, 0, 1, 2] == 1
    moved = apply(x, {"translate": torch.tensor([[2, -1], [0, 0]])})
    assert moved[0, 0, 3, 1] == 1 and moved[0].sum() == x[0].sum()
    assert torch.equal(moved[1], x[1])
    gone = apply(x, {"translate": torch.tensor([[-3, 0], [0, 0]])})
    assert (gone[0] == -1).all()  # shifted out of the field of view: background only


def test_translation_is_the_same_distance_in_mm_on_anisotropic_voxels():
    augment = Augment(3, ["translate"], p=1.0, spacing_mm=(1.0, 1.0, 4.0), translate_fraction=0.5, seed=0)
    shifts = augment.sample((256, 1, 16, 16, 16))["translate"].float()
    # Axis 2 has voxels 4x longer, so the same shifts in mm are 4x fewer voxels.
    ratio = shifts[:, :2].abs().mean() / shifts[:, 2].abs().mean()
    assert 3.0 < ratio < 5.5


def test_rot90_only_where_size_and_spacing_agree():
    assert rot90_planes((8, 8, 8), (1.0, 1.0, 3.0)) == [(0, 1)]
    assert rot90_planes((8, 6), (1.0, 1.0)) == []
    x = torch.randn(2, 1, 6, 6)
    turned = apply(x, {"rot90_01": torch.tensor([1, 0])})
    assert torch.equal(turned[0], torch.rot90(x[0], 1, (1, 2))) and torch.equal(turned[1], x[1])


def test_zoom_keeps_the_centre_and_factor_one_is_exact():
    x = point_image((9, 9), (4, 4), batch=1)
    x[0, 0, 4, 4] = 1.0
    zoomed = apply(x, {"scale": torch.tensor([2.0])})
    assert zoomed[0, 0, 4, 4] == pytest.approx(1.0, abs=1e-5)
    y = torch.randn(2, 1, 9, 9)
    assert torch.equal(apply(y, {"scale": torch.tensor([1.0, 1.0])}), y)


def test_cutout_sets_a_box_to_background_and_contrast_keeps_the_mean():
    x = torch.zeros(1, 1, 8, 8)
    record = {"cutout": torch.tensor([True]), "cutout_size": torch.tensor([[4, 2]]),
              "cutout_center": torch.tensor([[4, 4]])}  # fmt: skip
    out = apply(x, record)
    assert (out == -1).sum() == 3 and (out[0, 0, 3:6, 4] == -1).all()  # |i - 4| < 2 and |j - 4| < 1
    assert (out[0, 0, :, 0] == 0).all()  # far from the box: untouched
    y = torch.randn(2, 1, 8, 8)
    stretched = apply(y, {"contrast": torch.tensor([2.0, 0.5])})
    assert torch.allclose(stretched.mean((1, 2, 3)), y.mean((1, 2, 3)), atol=1e-6)


def test_ada_raises_p_when_the_discriminator_overfits_and_lowers_it_otherwise():
    augment = Augment(2, ["flip"], p=0.0, ada_target=0.6, ada_speed_images=100)
    for _ in range(4):
        augment.observe(torch.tensor(0.95))  # D is sure of every real image: overfitting
    augment.update_p(images=20)
    assert augment.p == pytest.approx(0.2)
    for _ in range(4):
        augment.observe(torch.tensor(0.1))
    augment.update_p(images=10)
    assert augment.p == pytest.approx(0.1)
    state = augment.state_dict()
    restored = Augment(2, ["flip"], ada_target=0.6)
    restored.load_state_dict(state)
    assert restored.p == augment.p and torch.equal(restored.generator.get_state(), augment.generator.get_state())


def test_unknown_op_is_a_config_error():
    with pytest.raises(ConfigError, match="valid: flip"):
        Augment(2, ["hue"])
