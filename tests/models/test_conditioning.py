"""Conditioning, full-size configurations and per-network options."""

from __future__ import annotations

import pytest
import torch
from _model_cases import BATCH, CONDITIONAL, SIZE, build_tiny, example_inputs, run, scalar_loss

from medgan.errors import ConfigError
from medgan.models import build_discriminator, build_generator, describe


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize(("role", "name"), CONDITIONAL, ids=[n for _, n in CONDITIONAL])
def test_class_labels_change_the_output(role, name, spatial_dims):
    torch.manual_seed(0)
    model = build_tiny(role, name, spatial_dims, num_classes=3).eval()
    assert model.num_classes == 3
    inputs = example_inputs(model)
    same = run(model, inputs)
    torch.testing.assert_close(run(model, inputs), same)  # the seeded forward repeats...
    other = run(model, (*inputs[:-1], (inputs[-1] + 1) % 3))
    assert not torch.allclose(other, same, atol=1e-6)  # ...so the difference is the labels'
    scalar_loss(other).backward()
    with pytest.raises(ConfigError, match="class-conditional.*pass labels"):
        model(inputs[0])
    unconditional = build_tiny(role, name, spatial_dims)
    with pytest.raises(ConfigError, match="unconditional"):
        unconditional(*inputs)


@pytest.mark.parametrize(
    ("name", "spatial_dims", "shape"),
    [("stylegan", 2, (256, 256)), ("resgen", 2, (256, 256)), ("stylegan", 3, (128,) * 3), ("resgen", 3, (128,) * 3)],
)
def test_default_latent_generators_reach_full_size(name, spatial_dims, shape):
    # Built on the meta device: shapes and FLOPs without allocating or computing anything.
    with torch.device("meta"):
        generator = build_generator(name, spatial_dims=spatial_dims)
        discriminator = build_discriminator("resnet", spatial_dims=spatial_dims)
        image = generator(torch.randn(2, generator.latent_dim))
        assert tuple(image.shape) == (2, 1, *shape) and generator.image_size == shape
        assert discriminator(image).shape == (2,)
    stats = describe(generator, (2, generator.latent_dim))
    assert stats["params"] > 1_000_000 and stats["flops_per_sample"] > 10**10


def test_full_size_3d_generator_runs_with_small_channels():
    torch.manual_seed(0)
    generator = build_generator(
        "resgen", spatial_dims=3, image_size=128, latent_dim=8, base_channels=1, max_channels=4
    ).eval()
    with torch.no_grad():
        image = generator(torch.randn(1, 8))
    assert image.shape == (1, 1, 128, 128, 128) and torch.isfinite(image).all()


@pytest.mark.parametrize("name", ["stylegan", "resgen"])
def test_non_square_sizes_and_bad_sizes(name):
    torch.manual_seed(0)
    model = build_tiny("generator", name, 2, image_size=(32, 16))
    assert model(*example_inputs(model)).shape == (BATCH, 1, 32, 16)
    with pytest.raises(ConfigError, match=r"\(48, 48\).*4 \* 2\^n.*use 32 or 64"):
        build_tiny("generator", name, 2, image_size=48)
    with pytest.raises(ConfigError, match="image_size must be"):
        build_tiny("generator", name, 3, image_size=(16, 16))


def test_stylegan_truncation_and_style_mixing():
    torch.manual_seed(0)
    model = build_tiny("generator", "stylegan", 2, use_noise=False, style_mixing_prob=0.0)
    z = torch.randn(BATCH, 16)
    model.train()
    for _ in range(3):
        model(z)  # tracks the mean of w in training mode
    assert model.mapping.w_avg.abs().sum() > 0
    model.eval()
    w_avg_before = model.mapping.w_avg.clone()
    collapsed = model(z, truncation_psi=0.0)  # every sample becomes the average one
    torch.testing.assert_close(collapsed, collapsed[:1].expand_as(collapsed))
    assert torch.equal(model.mapping.w_avg, w_avg_before)  # evaluation never moves it
    assert not torch.allclose(model(z), collapsed)

    plain = model.eval()(z)
    model.train()
    torch.testing.assert_close(model(z), plain)  # no noise, no mixing: train == eval
    model.style_mixing_prob = 1.0
    torch.manual_seed(1)
    mixed = model(z)
    assert not torch.allclose(mixed, plain, atol=1e-5)


def test_conditional_truncation_pulls_each_sample_toward_its_own_class_mean():
    torch.manual_seed(0)
    model = build_tiny("generator", "stylegan", 2, num_classes=3, use_noise=False, style_mixing_prob=0.0).eval()
    z, labels = torch.randn(6, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    centres = model.truncation_centre(labels)
    fixed = torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))
    for i, label in enumerate(labels):  # each class's mean w over the fixed latents, computed here directly
        expected = model.mapping(fixed, label.expand(4096), update_w_avg=False).mean(dim=0)
        torch.testing.assert_close(centres[i], expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(centres[0], centres[1], atol=1e-4)
    collapsed = model(z, labels, truncation_psi=0.0)  # each sample becomes its class's mean: one image per class
    torch.testing.assert_close(collapsed[:3], collapsed[3:])
    assert not torch.allclose(collapsed[0], collapsed[1], atol=1e-5)
    plain, half = model(z, labels), model(z, labels, truncation_psi=0.5)
    assert (half - collapsed).abs().mean() < (plain - collapsed).abs().mean()  # psi moves it between the two
    kept = model._centres[1]
    model.truncation_centre(labels[:2])
    assert model._centres[1] is kept  # drawing batch after batch reuses the class means...
    with torch.no_grad():
        model.mapping.embed.weight.add_(1.0)  # ...until the weights change (a training or EMA step, a load)
    moved = model.truncation_centre(labels)
    assert model._centres[1] is not kept and not torch.allclose(moved, centres)
    with torch.enable_grad():
        assert not model.truncation_centre(labels).requires_grad  # a constant, like w_avg: no graph kept in the cache


def test_the_generators_own_truncation_applies_when_drawing_never_in_training():
    torch.manual_seed(0)
    model = build_tiny("generator", "stylegan", 2, use_noise=False, style_mixing_prob=0.0, truncation_psi=0.0)
    z = torch.randn(BATCH, 16)
    model.train()
    trained = model(z)  # training draws every sample from its own w, whatever the option
    assert not torch.allclose(trained, trained[:1].expand_as(trained))
    model.eval()
    drawn = model(z)  # drawing uses the option: psi 0, every sample the mean one
    torch.testing.assert_close(drawn, drawn[:1].expand_as(drawn))
    torch.testing.assert_close(model(z, truncation_psi=1.0), trained)  # an explicit psi wins
    with pytest.raises(ConfigError, match="truncation_psi must be in"):
        build_tiny("generator", "stylegan", 2, truncation_psi=1.5)


def test_stylegan_fused_and_unfused_agree():
    torch.manual_seed(0)
    unfused = build_tiny("generator", "stylegan", 3, use_noise=False).eval()
    fused = build_tiny("generator", "stylegan", 3, use_noise=False, fused_modconv=True).eval()
    fused.load_state_dict(unfused.state_dict())
    z = torch.randn(3, 16)
    torch.testing.assert_close(fused(z), unfused(z), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_spade_accepts_integer_channel_and_one_hot_maps(spatial_dims):
    torch.manual_seed(0)
    model = build_tiny("generator", "spade", spatial_dims).eval()
    labels = torch.randint(0, 3, (2, *([SIZE] * spatial_dims)))
    expected = model(labels)
    one_hot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    torch.testing.assert_close(model(one_hot), expected)
    torch.testing.assert_close(model(labels.unsqueeze(1)), expected)
    assert not torch.allclose(model((labels + 1) % 3), expected)  # the label map steers the output
    with pytest.raises(ConfigError, match="latent_dim=0"):
        model(labels, torch.randn(2, 4))
    with pytest.raises(ConfigError, match="one-hot map with 3 channels"):
        model(torch.rand(2, 5, *([SIZE] * spatial_dims)))


def test_spade_with_a_latent_is_multimodal():
    torch.manual_seed(0)
    model = build_tiny("generator", "spade", 2, latent_dim=8).eval()
    assert model.latent_dim == 8
    labels = torch.randint(0, 3, (2, SIZE, SIZE))
    z = torch.randn(2, 8)
    torch.testing.assert_close(model(labels, z), model(labels, z))
    assert not torch.allclose(model(labels, z), model(labels, -z))
    assert model(labels).shape == (2, 1, SIZE, SIZE)  # z drawn when not given
    scalar_loss(model.train()(labels)).backward()
    assert model.stem.weight.grad is not None


@pytest.mark.parametrize(
    ("role", "name", "kwargs"),
    [
        ("generator", "resgen", {}),
        ("generator", "spade", {}),
        ("discriminator", "resnet", {"num_classes": 2}),
        ("discriminator", "patchgan", {"norm": "none"}),
        ("discriminator", "multiscale_patchgan", {}),
    ],
)
def test_spectral_norm_option(role, name, kwargs):
    torch.manual_seed(0)
    model = build_tiny(role, name, 2, spectral_norm=True, **kwargs)
    normalised = [m for m in model.modules() if hasattr(m, "parametrizations")]
    assert normalised, "spectral_norm=True parametrized nothing"
    if role == "discriminator":  # discriminators normalise every weight-bearing layer
        plain = [m for m in model.modules() if isinstance(getattr(m, "weight", None), torch.nn.Parameter)]
        assert all(isinstance(m, torch.nn.modules.batchnorm._NormBase) for m in plain)
    scalar_loss(model(*example_inputs(model))).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["patchgan", "multiscale_patchgan"])
def test_patch_features_for_feature_matching(name):
    torch.manual_seed(0)
    model = build_tiny("discriminator", name, 3).eval()
    (x,) = example_inputs(model)
    logits, features = model.forward_features(x)
    assert len(logits) == len(features) == len(model.depths)
    for scale_logits, scale_features, depth in zip(logits, features, model.depths, strict=True):
        assert len(scale_features) == depth + 1  # first conv + num_layers convs, before the logit conv
        assert all(f.shape[0] == BATCH and f.dim() == 5 for f in scale_features)
        assert scale_logits.shape[1] == 1
    for got, expected in zip(model(x), logits, strict=True):
        torch.testing.assert_close(got, expected)
    with pytest.raises(ConfigError, match="unconditional"):
        model(x, torch.zeros(BATCH, dtype=torch.long))


def test_unet_and_resnet_take_any_multiple():
    torch.manual_seed(0)
    unet = build_tiny("generator", "unet", 2)  # depth 3: multiples of 8
    assert unet(torch.randn(1, 1, 24, 40)).shape == (1, 1, 24, 40)
    resnet = build_tiny("generator", "resnet", 3, padding_mode="zeros", norm="batch")
    assert resnet(torch.randn(2, 1, 8, 12, 20)).shape == (2, 1, 8, 12, 20)
