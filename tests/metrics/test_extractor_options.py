"""Extractor options and user extractor files fail early and in one line: a wrong input shape is
found by one blank batch at load time (before any image is read), and every option value is
checked for its type, naming --extractor-option."""

from __future__ import annotations

import hashlib
import json
import warnings

import pytest
import torch
from torch import nn

from medgan.data.phantoms import PHANTOMS
from medgan.errors import ConfigError
from medgan.io import write_image
from medgan.metrics.extractor_files import load_extractor_file
from medgan.metrics.features import EXTRACTORS


class _ThreeChannels(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        return self.conv(x)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def three_channel_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("extractors")
    torch.manual_seed(0)
    net = _ThreeChannels().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), root / "rgb.pt")
    program = torch.export.export(net, (torch.rand(2, 3, 64, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, root / "rgb64.pt2")
    return root


def test_wrong_channels_or_size_are_found_at_load_time(three_channel_files):
    script, program = three_channel_files / "rgb.pt", three_channel_files / "rgb64.pt2"
    with pytest.raises(ConfigError) as info:
        load_extractor_file(script, _sha(script), input_size=32)
    message = str(info.value)
    assert message.startswith(f"{script}: the rgb extractor fails on inputs 2x1x32x32 (RuntimeError: Given groups=1")
    assert "to have 3 channels" in message and "now in_channels=1, input_size=32, spatial_dims=2" in message
    assert "--extractor-option in_channels=N, input_size=N or spatial_dims=2|3" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"fails on inputs 2x3x32x32 \(Guard failed"):
        load_extractor_file(program, _sha(program), in_channels=3, input_size=32)  # exported for 64 x 64
    assert load_extractor_file(program, _sha(program), in_channels=3, input_size=64).in_channels == 3


def _set(folder, seeds):
    folder.mkdir()
    for seed in seeds:
        write_image(PHANTOMS.build("ct_body", spatial_dims=2, seed=seed, shape=(48, 48)), folder / f"s{seed}.nii.gz")
        (folder / f"s{seed}.json").write_text(json.dumps({"Modality": "CT"}))
    return folder


def test_cli_reports_a_wrong_extractor_file_before_reading_images(three_channel_files, tmp_path, run_cli, monkeypatch):
    real, fake = _set(tmp_path / "real", [0, 1]), _set(tmp_path / "fake", [2, 3])
    import medgan.metrics.evaluate as evaluate

    def never(*args, **kwargs):
        raise AssertionError("images were read before the extractor was checked")

    monkeypatch.setattr(evaluate, "collect_set", never)
    script = three_channel_files / "rgb.pt"
    status, _, err = run_cli(
        "evaluate", "--real", real, "--fake", fake, "--out", tmp_path / "o", "--metrics", "fd",
        "--extractor-file", script, "--extractor-sha256", _sha(script), "--no-progress",
    )  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and "to have 3 channels" in lines[0], err


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("seed=abc", "--extractor-option seed='abc': seed must be a whole number"),
        ("seed=1.5", "--extractor-option seed=1.5: seed must be a whole number"),
        ("input_size=abc", "input_size='abc': input_size must be a whole number >= 8"),
        ("input_size=[64,64]", "input_size=[64, 64]: input_size must be a whole number >= 8"),
        ("input_size=0", "input_size=0: input_size must be a whole number >= 8"),  # was silently 224
        ("seed", "'--extractor-option': expected KEY=VALUE, e.g. input_size=224; got 'seed'"),
        ("seed=", "'--extractor-option': expected KEY=VALUE"),
    ],
)
def test_bad_option_values_are_one_line(option, expected, tmp_path, run_cli):
    (tmp_path / "real").mkdir()  # empty: the options are checked before any image is looked for
    status, _, err = run_cli(
        "evaluate", "--real", tmp_path / "real", "--fake", tmp_path / "real", "--out", tmp_path / "o",
        "--extractor-option", option,
    )  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and expected in lines[0], err
    assert "--set" not in err


def test_file_extractor_option_types(three_channel_files):
    script = three_channel_files / "rgb.pt"
    for options, expected in (
        ({"in_channels": 0}, "in_channels=0: in_channels must be a whole number >= 1"),
        ({"input_mean": "abc"}, "input_mean='abc': input_mean must be a number"),
        ({"input_std": 0}, "input_std=0: input_std must be a number > 0"),
        ({"spatial_dims": 4}, "spatial_dims=4: spatial_dims must be 2 or 3"),
        ({"name": "my net"}, "name='my net': name must be a name of letters"),
    ):
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace("[", r"\[")):
            load_extractor_file(script, _sha(script), **options)
    with pytest.raises(ConfigError, match="input_size=True"):
        EXTRACTORS.build("random_cnn", input_size=True)


def test_preprocessing_of_a_file_extractor_is_recorded(three_channel_files, tmp_path, run_cli):
    real, fake = _set(tmp_path / "real", [0, 1]), _set(tmp_path / "fake", [2, 3])
    program = three_channel_files / "rgb64.pt2"
    status, _, err = run_cli(
        "evaluate", "--real", real, "--fake", fake, "--out", tmp_path / "o", "--metrics", "fd", "--no-progress",
        "--extractor-file", program, "--extractor-sha256", _sha(program), "--extractor-option", "in_channels=3",
        "--extractor-option", "input_size=64", "--extractor-option", "input_mean=0.25",
        "--extractor-option", "input_std=0.5", "--extractor", "file",
    )  # fmt: skip
    assert status == 0, err
    extractor = json.loads((tmp_path / "o" / "metrics.json").read_text())["extractor"]
    assert extractor["name"] == "rgb64" and extractor["input_size"] == [64, 64]
    assert (extractor["in_channels"], extractor["input_mean"], extractor["input_std"]) == (3, 0.25, 0.5)
