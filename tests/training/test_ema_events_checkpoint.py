"""EMA halflife semantics; TensorBoard event files and PNGs readable; checkpoints atomic and checked."""

from __future__ import annotations

import datetime
import os
import random
import struct
import zlib

import numpy as np
import pytest
import torch

from medgan.errors import ConfigError, InputError
from medgan.io.png import encode_png
from medgan.tasks.checkpoint import check_compatible, checkpoint_paths, load_checkpoint, save_checkpoint
from medgan.training.ema import EMA, ema_beta
from medgan.training.events import EventWriter, crc32c, read_events
from medgan.training.run_state import get_rng_state, set_rng_state


def test_ema_halves_the_old_share_every_halflife():
    assert ema_beta(10**6, 100, 100, None) == pytest.approx(0.5)
    assert ema_beta(10**6, 50, 100, None) ** 2 == pytest.approx(0.5)
    assert ema_beta(100, 10, 1000, 0.1) == pytest.approx(0.5)  # ramp-up: halflife min(1000, 0.1 * 100) = 10
    assert ema_beta(100, 10, 0, None) == 0.0


def test_ema_update_averages_parameters_and_copies_buffers():
    net = torch.nn.BatchNorm1d(2)
    ema = EMA({"G": net}, halflife_images=4, rampup_ratio=None)
    with torch.no_grad():
        net.weight.fill_(3.0)  # the copy still holds 1.0
        net.running_mean.fill_(7.0)
    ema.update(images_seen=100, batch_images=4)  # beta = 0.5
    assert torch.allclose(ema.modules["G"].weight, torch.full((2,), 2.0))
    assert torch.equal(ema.modules["G"].running_mean, net.running_mean)
    assert not ema.modules["G"].weight.requires_grad


def test_a_zero_halflife_ema_is_the_current_weights():
    net = torch.nn.Linear(2, 2)
    ema = EMA({"G": net}, halflife_images=0, rampup_ratio=None)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(images_seen=10, batch_images=2)
    assert torch.equal(ema.modules["G"].weight, net.weight)
    assert torch.equal(ema.state_dict()["G"]["bias"], net.bias)


def test_crc32c_standard_check_value_and_event_round_trip(tmp_path):
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720, B.4)
    writer = EventWriter(str(tmp_path))
    writer.scalars(5, {"loss_d": 0.25, "loss_g": -1.5})
    png = encode_png(np.arange(12, dtype=np.uint8).reshape(3, 4))
    writer.image(5, "samples", png, 3, 4)
    writer.close()
    events = read_events(writer.path)
    assert events[1]["step"] == 5 and events[1]["scalars"] == {"loss_d": 0.25, "loss_g": -1.5}
    assert events[2]["images"]["samples"] == png
    with open(writer.path, "r+b") as fh:  # a flipped byte is caught by the record CRC
        fh.seek(-6, os.SEEK_END)
        byte = fh.read(1)
        fh.seek(-6, os.SEEK_END)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="CRC"):
        read_events(writer.path)


def test_png_decodes_to_the_same_pixels():
    pixels = (np.arange(20 * 7) % 251).astype(np.uint8).reshape(20, 7)
    data = encode_png(pixels)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour) == (7, 20, 8, 0)
    length = struct.unpack(">I", data[33:37])[0]
    raw = np.frombuffer(zlib.decompress(data[41 : 41 + length]), np.uint8).reshape(20, 8)
    assert (raw[:, 0] == 0).all() and np.array_equal(raw[:, 1:], pixels)
    sixteen = encode_png(np.array([[0, 65535]], np.uint16))
    assert sixteen[24] == 16


def test_checkpoints_are_atomic_rotated_and_weights_only(tmp_path, monkeypatch):
    run = str(tmp_path)
    state = {"config": {"task": "unconditional"}, "step": 1, "networks": {"G": {"w": torch.ones(2)}}}
    for step in (1, 2, 3, 4):
        save_checkpoint(run, step, {**state, "step": step}, keep=2)
    assert [os.path.basename(p) for p in checkpoint_paths(run)] == ["step_0000003.pt", "step_0000004.pt"]
    assert load_checkpoint(checkpoint_paths(run)[-1])["step"] == 4

    def crash(obj, path):  # the process dies half-way through writing
        with open(path, "wb") as fh:
            fh.write(b"PK\x03\x04 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(run, 5, state)
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["step_0000003.pt", "step_0000004.pt"]


def test_corrupted_and_foreign_files_are_input_errors(tmp_path):
    good = save_checkpoint(str(tmp_path), 1, {"config": {}, "step": 1, "networks": {}})
    truncated = tmp_path / "truncated.pt"
    with open(good, "rb") as fh:
        truncated.write_bytes(fh.read()[:200])
    with pytest.raises(InputError, match="truncated, corrupted"):
        load_checkpoint(str(truncated))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(InputError, match="not a medgan checkpoint"):
        load_checkpoint(str(foreign))
    evil = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "config": {}, "step": 1, "networks": {}, "x": datetime.date(2020, 1, 1)}, evil)
    with pytest.raises(InputError):
        load_checkpoint(str(evil))


def test_another_architecture_is_refused_with_the_key_named():
    stored = {
        "task": "unconditional",
        "generator": {"name": "resgen", "options": {"base_channels": 16}},
        "discriminator": {"name": "resnet", "options": {}},
        "data": {"spatial_dims": 2, "image_size": [16, 16]},
    }
    check_compatible(stored, {**stored, "seed": 3}, "ckpt.pt")  # other keys may change
    other = {**stored, "generator": {"name": "resgen", "options": {"base_channels": 32}}}
    with pytest.raises(ConfigError, match="generator"):
        check_compatible(stored, other, "ckpt.pt")


def test_rng_states_round_trip():
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    state = get_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_sample_grids_show_three_planes_of_volumes():
    from medgan.training.logging import sample_grid

    volume = -torch.ones(2, 1, 8, 6, 4)
    volume[:, :, :, :, 2] = 1.0  # the middle axial slice is bright
    grid = sample_grid([volume], columns=2)
    # Planes rotated so the third axis is up: axial 6 x 8, coronal 4 x 8, sagittal 4 x 6 pixels, each with a
    # 1-pixel gap; tiles 6 high, so enlarged 64 // 6 = 10 times.
    zoom = 10
    assert grid.shape == ((6 + 1) * zoom, 2 * (9 + 9 + 7 + 1) * zoom)
    assert grid[: 6 * zoom, : 8 * zoom].min() == 255  # the first sample's axial plane: all bright
    coronal = grid[: 4 * zoom, 9 * zoom : 17 * zoom]
    assert coronal.min() == 0 and coronal.max() == 255  # one bright row (k = 2) in a dark plane
    flat = sample_grid([torch.zeros(1, 3, 64, 32)], columns=1)  # 2D: the middle channel, 32 x 64 after rotation
    assert flat.shape == (33 * 2, 66 * 2) and flat[0, 0] == 128


def test_stats_average_each_name_over_the_steps_that_reported_it_and_name_the_first_bad_step():
    from medgan.training.logging import Stats, TrainingDiverged

    stats = Stats()
    stats.add(1, {"loss_d": torch.tensor(1.0), "loss_r1": torch.tensor(0.5), "loss_g": torch.tensor(2.0)})
    stats.add(2, {"loss_d": torch.tensor(3.0), "loss_g": torch.tensor(4.0)})
    stats.add(3, {"loss_d": torch.tensor(5.0, dtype=torch.bfloat16), "loss_g": torch.tensor([6.0])})
    stats.check_finite()
    assert stats.means() == pytest.approx({"loss_d": 3.0, "loss_r1": 0.5, "loss_g": 4.0})
    assert stats.means() == {}  # reset
    stats.add(4, {"loss_d": torch.tensor(1.0), "loss_g": torch.tensor(float("inf"))})
    stats.add(5, {"loss_d": torch.tensor(float("nan")), "loss_r1": torch.tensor(1.0), "loss_g": torch.tensor(1.0)})
    with pytest.raises(TrainingDiverged, match="loss_g became NaN or infinite at step 4"):
        stats.check_finite()
