"""medgan's sliding-window engine against MONAI's `sliding_window_inference`, and its own promises: no seams,
2D slice by slice with slabs, batches across slices, memory placement."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import sliding_window_inference
from monai.inferers.utils import _get_scan_interval

from medgan.inference.whole_scan import (
    apply_to_scan,
    blend_windows,
    importance_map,
    placement,
    weight_sum,
    window_starts,
)


def conv_net(dims: int, channels_in: int = 2, channels_out: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(conv(channels_in, 4, 3, padding=1), torch.nn.Tanh(),
                               conv(4, channels_out, 3, padding=1)).eval()  # fmt: skip


def affine_net(x: torch.Tensor) -> torch.Tensor:
    """Identity-ish: a per-voxel affine map, so any misplaced window shows."""
    return 2.0 * x - 0.5


@pytest.mark.parametrize("window", [(16, 16), (7, 9), (16, 16, 8), (5, 6, 7), (1, 4)])
def test_the_importance_map_is_monais_gaussian(window):
    assert torch.equal(importance_map(window), compute_importance_map(window, mode="gaussian", sigma_scale=0.125))


STARTS = [(37, 16, 0.0), (37, 16, 0.25), (37, 16, 0.5), (16, 16, 0.5), (17, 16, 0.5), (100, 7, 0.9), (96, 96, 0.5),
          (512, 96, 0.5)]  # fmt: skip


@pytest.mark.parametrize("size,window,overlap", STARTS)
def test_window_starts_are_monais(size, window, overlap):
    interval = _get_scan_interval((size,), (window,), 1, (overlap,))
    expected = [s[0].start for s in dense_patch_slices((size,), (window,), interval)]
    assert window_starts(size, window, overlap) == expected
    assert window_starts(size, window, overlap)[-1] == size - window  # the last window flush with the border


def test_the_weight_sum_equals_the_map_added_at_every_position():
    weight = importance_map((5, 6, 7))
    size = (13, 6, 20)
    starts = [window_starts(n, w, 0.4) for n, w in zip(size, weight.shape, strict=True)]
    brute = torch.zeros(size, dtype=torch.float64)
    for a, b, c in itertools.product(*starts):
        brute[a : a + 5, b : b + 6, c : c + 7] += weight.double()
    assert torch.allclose(weight_sum(weight, starts, size).double(), brute, rtol=1e-6)


CASES = [  # images [N, C, *spatial] and the window: 2D and 3D, odd sizes, one smaller than the window
    ((2, 2, 37, 23), (16, 16)),
    ((3, 2, 45, 33), (16, 9)),
    ((2, 2, 37, 23, 11), (16, 16, 8)),
    ((1, 2, 10, 40, 5), (16, 16, 8)),  # padded along two axes, cropped back
]


@pytest.mark.parametrize("shape,window", CASES)
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("network", ["conv", "affine"])
def test_equal_to_monai_gaussian_sliding_window(shape, window, overlap, network):
    torch.manual_seed(hash((shape, overlap)) % 1000)
    images = torch.randn(shape)
    net = conv_net(len(window)) if network == "conv" else affine_net
    with torch.no_grad():
        expected = sliding_window_inference(images, window, 3, net, overlap=overlap, mode="gaussian")
    got = blend_windows(images, window, net, overlap, batch_size=3)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert torch.allclose(got, expected.as_tensor() if hasattr(expected, "as_tensor") else expected, atol=2e-6)


@pytest.mark.parametrize("shape,window", CASES)
@pytest.mark.parametrize("value", [0.3, -1.0, 7.25])
def test_no_seams_a_constant_network_gives_its_constant_everywhere(shape, window, value):
    images = torch.randn(shape)
    got = blend_windows(images, window, lambda x: torch.full_like(x[:, :1], value), overlap=0.5, batch_size=4)
    # Sums of the weights in two orders differ by float rounding only: a few ulps of float32.
    assert torch.allclose(got, torch.full_like(got, value), rtol=4 * 2**-23, atol=0)


def test_identity_gives_the_scan_back_and_batches_do_not_change_the_result():
    volume = torch.randn(1, 29, 31, 13)
    outputs = [apply_to_scan(lambda w: w["image"], {"image": volume}, 3, (8, 8, 8), overlap=0.5, batch_size=b)
               for b in (1, 3, 64)]  # fmt: skip
    for y in outputs:
        assert torch.allclose(y, volume, atol=1e-6)
    net = conv_net(3, 1, 2)
    a, b = (apply_to_scan(lambda w: net(w["image"]), {"image": volume}, 3, (8, 8, 8), batch_size=n) for n in (1, 7))
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_a_2d_network_runs_slice_by_slice_with_its_slab_of_neighbours(slice_axis):
    volume = torch.randn(2, 9, 11, 7)  # two channels
    moved = volume.movedim(1 + slice_axis, 0)  # [n, C, a, b]
    n = moved.shape[0]

    def neighbours_mean(windows):  # [B, slab * C, a, b] -> each slice's channels: the mean over the slab
        x = windows["image"]
        return x.reshape(x.shape[0], 3, 2, *x.shape[2:]).mean(1).repeat(1, 3, 1, 1)  # 3 slices' worth of channels

    y = apply_to_scan(neighbours_mean, {"image": volume}, 2, (8, 8), slice_axis=slice_axis, slab_slices=3,
                      overlap=0.25, batch_size=5)  # fmt: skip
    index = torch.arange(n)
    expected = (moved[(index - 1).clamp(0, n - 1)] + moved + moved[(index + 1).clamp(0, n - 1)]) / 3  # edges repeated
    assert y.shape == volume.shape
    assert torch.allclose(y, expected.movedim(0, 1 + slice_axis), atol=1e-5)


def test_several_inputs_reach_the_network_under_their_own_keys():
    image, labels = torch.randn(1, 20, 18), torch.randint(0, 4, (1, 20, 18))

    def predict(windows):
        assert set(windows) == {"image", "labels"} and windows["labels"].shape[1] == 1
        return windows["image"] * 10 + windows["labels"]

    y = apply_to_scan(predict, {"image": image, "labels": labels}, 2, (8, 8), overlap=0.5)
    assert torch.allclose(y, image * 10 + labels, atol=1e-5)


def test_bf16_autocast_runs_on_the_cpu_close_to_fp32():
    volume = torch.randn(1, 24, 20, 12)
    net = conv_net(3, 1, 1)
    fp32 = apply_to_scan(lambda w: net(w["image"]), {"image": volume}, 3, (8, 8, 8), overlap=0.5)
    bf16 = apply_to_scan(lambda w: net(w["image"]), {"image": volume}, 3, (8, 8, 8), overlap=0.5, precision="bf16")
    assert not torch.equal(fp32, bf16)
    assert float((bf16 - fp32).norm() / fp32.norm()) < 2e-2


def test_bad_arguments_are_refused():
    x = torch.randn(1, 1, 16, 16)
    with pytest.raises(ValueError, match="overlap"):
        blend_windows(x, (8, 8), affine_net, overlap=1.0)
    with pytest.raises(ValueError, match="precision"):
        blend_windows(x, (8, 8), affine_net, precision="fp16")
    with pytest.raises(ValueError, match="window of 2 positive sizes"):
        blend_windows(x, (8, 8, 8), affine_net)
    with pytest.raises(ValueError, match="output of the window's size"):
        blend_windows(x, (8, 8), lambda w: w[..., :4, :4])


def test_placement_streams_what_does_not_fit_on_the_gpu():
    cuda, gib = torch.device("cuda"), 2**30
    assert placement(torch.device("cpu"), 100 * gib, 100 * gib, 0) == (True, True)
    assert placement(cuda, 1 * gib, 1 * gib, 40 * gib) == (True, True)
    assert placement(cuda, 20 * gib, 1 * gib, 40 * gib) == (False, True)  # the scan streams, the output stays
    assert placement(cuda, 1 * gib, 30 * gib, 40 * gib) == (True, False)  # the output is blended on the CPU
    assert placement(cuda, 1 * gib, 1 * gib, 40 * gib, accumulate_on="cpu") == (True, False)
    assert placement(cuda, 1 * gib, 1 * gib, 0, accumulate_on="device") == (False, True)
    with pytest.raises(ValueError, match="accumulate_on"):
        placement(cuda, 1, 1, 1, accumulate_on="gpu")


def test_inputs_are_not_modified_and_the_result_is_an_ordinary_tensor():
    volume = torch.randn(1, 12, 12, 12)
    before = volume.clone()
    y = apply_to_scan(lambda w: w["image"] * 3, {"image": volume}, 3, (8, 8, 8))
    assert torch.equal(volume, before)
    assert not y.is_inference()
    y += 1  # callers may change it in place
    assert np.isfinite(y.numpy()).all()
