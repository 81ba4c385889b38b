"""Tiny checkpoints trained once per session from the debug configs, for the synthesis tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from medgan.config import load_config
from medgan.tasks.checkpoint import latest_checkpoint
from medgan.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[2]
SHORT = ["train.steps=3", "train.log_every_steps=3", "train.sample_every_steps=3", "train.checkpoint_every_steps=3",
         "train.batch_size=2", "train.num_samples=2"]  # fmt: skip


def _train(tmp_path_factory, config: str, *overrides: str) -> str:
    cfg = load_config(TrainConfig, REPO / "configs" / config, [*SHORT, *overrides])
    run = train(cfg, run_dir=str(tmp_path_factory.mktemp("run")))
    return latest_checkpoint(run)


@pytest.fixture(scope="session")
def ct_checkpoint(tmp_path_factory) -> str:
    """2D unconditional, trained on the sample CT (16 x 16 slices of 16 mm, window -1000..1000 HU)."""
    return _train(tmp_path_factory, "debug_cpu_unconditional.yaml", f"data.source={REPO}/sample_data/ct_body_3d.nii.gz")


def _stylegan(tmp_path_factory, psi: float = 1.0) -> str:
    options = "{latent_dim: 32, style_dim: 32, mapping_layers: 2, base_channels: 16, use_noise: 0, truncation_psi: %s}"
    options %= psi
    return _train(tmp_path_factory, "debug_cpu_unconditional.yaml", "generator.name=stylegan",
                  f"generator.options={options}", f"data.source={REPO}/sample_data/ct_body_3d.nii.gz")  # fmt: skip


@pytest.fixture(scope="session")
def stylegan_checkpoint(tmp_path_factory) -> str:
    """2D unconditional with a StyleGAN generator (a mapping network, so truncation applies), no noise inputs."""
    return _stylegan(tmp_path_factory)


@pytest.fixture(scope="session")
def stylegan_psi0_checkpoint(tmp_path_factory) -> str:
    """The same with `truncation_psi: 0` configured: drawing defaults to the mean style."""
    return _stylegan(tmp_path_factory, 0.0)


@pytest.fixture(scope="session")
def slab_checkpoint(tmp_path_factory) -> str:
    """2.5D: slabs of 3 neighbouring axial slices of the sample CT as channels."""
    return _train(tmp_path_factory, "debug_cpu_unconditional.yaml", "data.slab_slices=3",
                  f"data.source={REPO}/sample_data/ct_body_3d.nii.gz")  # fmt: skip


@pytest.fixture(scope="session")
def ct3d_checkpoint(tmp_path_factory) -> str:
    return _train(tmp_path_factory, "debug_cpu_3d.yaml", f"data.source={REPO}/sample_data/ct_body_3d.nii.gz")


@pytest.fixture(scope="session")
def conditional_checkpoint(tmp_path_factory) -> str:
    return _train(tmp_path_factory, "debug_cpu_conditional.yaml", f"data.source={REPO}/configs/debug_cpu_classes.csv")


@pytest.fixture(scope="session")
def pix2pix_checkpoint(tmp_path_factory) -> tuple[str, str]:
    """A 2D pix2pix checkpoint and the folder of phantom pairs it was trained on."""
    from medgan.data.phantom_pairs import write_phantom_pairs

    folder = tmp_path_factory.mktemp("pairs")
    csv = write_phantom_pairs(str(folder), count=2, spatial_dims=3, shape=(64, 64, 6), spacing_mm=(4.0, 4.0, 5.0))
    return _train(tmp_path_factory, "debug_cpu_pix2pix.yaml", f"data.source={csv}"), str(folder)


@pytest.fixture(scope="session")
def cyclegan_checkpoint(tmp_path_factory) -> str:
    """CT (domain A) -> MR (domain B), the shipped debug config."""
    return _train(tmp_path_factory, "debug_cpu_cyclegan.yaml")


@pytest.fixture(scope="session")
def mixed_class_checkpoint(tmp_path_factory) -> str:
    """Conditional, class 0 holding a CT and an MR scan, class 1 the CT alone."""
    folder = tmp_path_factory.mktemp("classes")
    ct, mr = REPO / "sample_data" / "ct_body_3d.nii.gz", REPO / "sample_data" / "mr_brain_3d.nii.gz"
    (folder / "classes.csv").write_text(f"image,label\n{ct},0\n{mr},0\n{ct},1\n")
    return _train(tmp_path_factory, "debug_cpu_conditional.yaml", f"data.source={folder / 'classes.csv'}")


@pytest.fixture(scope="session")
def label2image_checkpoint(tmp_path_factory) -> tuple[str, str]:
    """A 2D label-map-to-image checkpoint and the folder of phantom pairs (label maps 0..7) it was trained on."""
    from medgan.data.phantom_pairs import write_phantom_pairs

    folder = tmp_path_factory.mktemp("label_pairs")
    csv = write_phantom_pairs(str(folder), count=2, spatial_dims=3, shape=(64, 64, 6), spacing_mm=(4.0, 4.0, 5.0))
    quick = ["train.steps=1", "train.log_every_steps=1", "train.sample_every_steps=1",
             "train.checkpoint_every_steps=1", "generator.options.base_channels=8", "generator.options.max_channels=8",
             "discriminator.options.num_scales=1"]  # fmt: skip
    return _train(tmp_path_factory, "debug_cpu_label2image.yaml", f"data.source={csv}", *quick), str(folder)
