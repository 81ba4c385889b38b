"""The network contract, checked for every registered generator and discriminator in 2D and 3D."""

from __future__ import annotations

import os

import pytest
import torch
from _model_cases import (
    BATCH,
    CASE_IDS,
    CASES,
    SIZE,
    TINY_DISCRIMINATORS,
    TINY_GENERATORS,
    as_list,
    build_tiny,
    example_inputs,
    is_latent_generator,
    run,
    scalar_loss,
)

from medgan.errors import ConfigError
from medgan.models import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator, network_arguments

DIMS = [2, 3]


def test_every_registered_network_has_a_tiny_config():
    assert set(GENERATORS) == set(TINY_GENERATORS), "add the new generator to tests/models/_model_cases.py"
    assert set(DISCRIMINATORS) == set(TINY_DISCRIMINATORS), "add the new discriminator to _model_cases.py"


def expected_shape(model) -> tuple[int, ...]:
    """The output shape of a non-patch network for `example_inputs`."""
    if model.kind in ("latent", "label") and hasattr(model, "out_channels"):  # generators of a fixed size
        return (BATCH, model.out_channels, *model.image_size)
    if model.kind == "image":
        return (BATCH, model.out_channels, *(SIZE,) * model.spatial_dims)
    return (BATCH,)  # the residual discriminator: one logit per sample


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize(("role", "name"), CASES, ids=CASE_IDS)
def test_forward_backward_contract(role, name, spatial_dims):
    torch.manual_seed(0)
    model = build_tiny(role, name, spatial_dims)
    assert model.spatial_dims == spatial_dims
    assert model.kind in (("latent", "image", "label") if role == "generator" else ("latent", "patch"))
    inputs = example_inputs(model)
    outputs = as_list(run(model, inputs))
    if model.kind == "patch":
        assert len(outputs) == len(model.depths)
        sizes = [o.shape[2] for o in outputs]
        assert sizes == sorted(sizes, reverse=True), "deeper scales see coarser patches"
        for out in outputs:
            assert out.shape[:2] == (BATCH, 1) and out.dim() == spatial_dims + 2
            assert len(set(out.shape[2:])) == 1 and out.shape[2] >= 1
    else:
        assert [tuple(o.shape) for o in outputs] == [expected_shape(model)]
    for out in outputs:
        assert torch.isfinite(out).all()
    if role == "generator":
        lo, hi = model.output_range or (-float("inf"), float("inf"))
        assert lo <= outputs[0].min().item() and outputs[0].max().item() <= hi
        if is_latent_generator(model):
            assert model.latent_dim == TINY_GENERATORS[name]["latent_dim"] and model.num_classes == 0
            assert model.image_size == (SIZE,) * spatial_dims
        if model.kind == "label":
            assert model.num_labels == TINY_GENERATORS[name]["num_labels"]

    scalar_loss(outputs).backward()
    # DDP fails on parameters that get no gradient. A parameter whose gradient is zero up to rounding is dead
    # weight, e.g. a convolution bias right before a normalisation that subtracts the mean.
    grads = {pname: param.grad for pname, param in model.named_parameters()}
    assert all(g is not None for g in grads.values()), [p for p, g in grads.items() if g is None]
    assert all(torch.isfinite(g).all() for g in grads.values())
    largest = max(g.abs().max().item() for g in grads.values())
    dead = [p for p, g in grads.items() if g.abs().max().item() <= 1e-5 * largest]
    assert not dead, f"parameters with (numerically) zero gradient: {dead}"


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize(("role", "name"), CASES, ids=CASE_IDS)
def test_channels_last_matches_contiguous(role, name, spatial_dims):
    torch.manual_seed(0)
    registry = GENERATORS if role == "generator" else DISCRIMINATORS
    # Two input channels: with one, channels-last and contiguous are the same layout.
    overrides = {"in_channels": 2} if "in_channels" in network_arguments(registry, name) else {}
    model = build_tiny(role, name, spatial_dims, **overrides).eval()
    inputs = example_inputs(model)
    expected = as_list(run(model, inputs))

    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    model = model.to(memory_format=fmt)
    inputs = tuple(
        x.to(memory_format=fmt) if x.is_floating_point() and x.dim() == spatial_dims + 2 else x for x in inputs
    )
    if any(x.dim() == spatial_dims + 2 for x in inputs):
        assert inputs[0].is_contiguous(memory_format=fmt) and not inputs[0].is_contiguous()
    got = as_list(run(model, inputs))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    scalar_loss(got).backward()


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize(("role", "name"), CASES, ids=CASE_IDS)
def test_bf16_autocast_runs_and_stays_close(role, name, spatial_dims):
    torch.manual_seed(0)
    model = build_tiny(role, name, spatial_dims).eval()
    inputs = example_inputs(model)
    reference = as_list(run(model, inputs))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = as_list(run(model, inputs))
        loss = scalar_loss(outputs)
    loss.backward()
    for out, ref in zip(outputs, reference, strict=True):
        assert torch.isfinite(out).all()
        # bf16 keeps ~3 significant digits; a few percent of the output's scale is what a bf16 network gives.
        scale = ref.abs().max().item() + 1e-3
        assert (out.float() - ref).abs().max().item() < 0.05 * scale


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize(("role", "name"), CASES, ids=CASE_IDS)
def test_init_is_deterministic_under_a_seed(role, name, spatial_dims):
    states = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        states.append(build_tiny(role, name, spatial_dims).state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def bad_shape(model) -> tuple[tuple[int, ...], str]:
    """An input shape `model` cannot take, and the text its error must contain."""
    d = model.spatial_dims
    if is_latent_generator(model):
        return (BATCH, model.latent_dim + 1), str(model.latent_dim + 1)
    if model.kind == "patch":
        return (BATCH, model.in_channels, *([3] * d)), str((3,) * d)
    if getattr(model, "any_size", False):  # every spatial size fits: a wrong channel count is what it refuses
        return (BATCH, model.in_channels + 1, *([SIZE] * d)), f"takes {model.in_channels} input channel"
    odd = (SIZE + 2,) + (SIZE,) * (d - 1)  # not a multiple of any power of two above 2, and not the built size
    if model.kind == "label":
        return (BATCH, *odd), str(odd)
    return (BATCH, model.in_channels, *odd), str(odd)


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize(("role", "name"), CASES, ids=CASE_IDS)
def test_check_input_size_names_the_bad_size(role, name, spatial_dims):
    model = build_tiny(role, name, spatial_dims)
    good = tuple(example_inputs(model)[0].shape)
    model.check_input_size(good)  # accepts what it can take
    shape, text = bad_shape(model)
    with pytest.raises(ConfigError) as info:
        model.check_input_size(shape)
    assert text in str(info.value)
    # forward says the same, instead of failing deep inside a convolution
    bad_input = torch.zeros(shape, dtype=torch.long) if model.kind == "label" else torch.randn(shape)
    extra = example_inputs(model)[1:]
    with pytest.raises(ConfigError, match="cannot take|takes"):
        model(bad_input, *extra)


IMAGE_CASES = [
    (role, name)
    for role, name in CASES
    if "in_channels" in network_arguments(GENERATORS if role == "generator" else DISCRIMINATORS, name)
]


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize(("role", "name"), IMAGE_CASES, ids=[f"{r[0].upper()}-{n}" for r, n in IMAGE_CASES])
def test_wrong_channel_count_is_a_config_error(role, name, spatial_dims):
    model = build_tiny(role, name, spatial_dims)
    with pytest.raises(ConfigError, match=f"{model.in_channels} input channel"):
        model.check_input_size((BATCH, model.in_channels + 1, *([SIZE] * spatial_dims)))


def test_unknown_names_and_arguments_say_what_would_work():
    with pytest.raises(ConfigError, match="did you mean 'stylegan'"):
        build_generator("stylegna")
    with pytest.raises(ConfigError, match="did you mean 'patchgan'.*valid: multiscale_patchgan, patchgan, resnet"):
        build_discriminator("patchgn")
    with pytest.raises(ConfigError, match="has no argument 'chanels'; did you mean 'channels'"):
        build_generator("unet", chanels=8)
    with pytest.raises(ConfigError, match="needs argument.*num_labels"):
        build_generator("spade", spatial_dims=2)
    with pytest.raises(ConfigError, match="spatial_dims must be 2 or 3"):
        build_generator("unet", spatial_dims=1)
    with pytest.raises(ConfigError, match="did you mean 'instance'"):
        build_generator("unet", norm="instanse")
    with pytest.raises(ConfigError, match="out_activation"):
        build_generator("resnet", out_activation="sigmoid")


@pytest.mark.parametrize(("role", "name"), CASES, ids=CASE_IDS)
def test_torch_compile_traces_one_graph(role, name):
    """fullgraph=True fails on any graph break (Python control flow on tensor values, unsupported calls).

    The aot_eager backend traces forward and backward like inductor but skips code generation, which takes ~40 s
    per network on CPU; `test_inductor_compile_matches_eager` covers code generation when asked for.
    """
    torch.manual_seed(0)
    model = build_tiny(role, name, 2)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    scalar_loss(run(compiled, example_inputs(model))).backward()
    torch._dynamo.reset()


def test_minibatch_std_compiles_with_a_dynamic_batch():
    """A short last batch recompiles with a symbolic batch size; the group-size search must stay traceable
    (math.gcd on a symbolic size broke the graph)."""
    torch.manual_seed(0)
    model = build_tiny("discriminator", "resnet", 2)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
    for batch in (BATCH, BATCH + 2):
        scalar_loss(compiled(*example_inputs(model, batch=batch))).backward()
    torch._dynamo.reset()


@pytest.mark.skipif(
    os.environ.get("MEDGAN_TEST_INDUCTOR") != "1",
    reason="inductor code generation takes ~40 s per network on CPU; set MEDGAN_TEST_INDUCTOR=1 to run",
)
@pytest.mark.slow
def test_inductor_compile_matches_eager():
    torch.manual_seed(0)
    model = build_tiny("generator", "unet", 2)
    inputs = example_inputs(model)
    expected = run(model, inputs)
    got = run(torch.compile(model), inputs)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()
