"""The `inpaint` task: random masks, the composite, training in 2D and 3D, and filling whole scans from a mask CSV."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch

from medgan.config import load_config
from medgan.data.datasets import ScanDataset
from medgan.data.records import find_records
from medgan.io import read_image, write_image
from medgan.io.image import make_image
from medgan.models import build_discriminator, build_generator
from medgan.tasks import TASKS
from medgan.tasks.checkpoint import latest_checkpoint
from medgan.tasks.config import TrainConfig
from medgan.tasks.inpaint import composite, masked_input
from medgan.training import train
from medgan.training.objectives import OBJECTIVES
from medgan.training.objectives.inpaint import random_masks
from medgan.training.precision import requires_grad, step

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHORT = ["train.steps=3", "train.log_every_steps=3", "train.sample_every_steps=3", "train.checkpoint_every_steps=3",
         "train.batch_size=2", "train.num_samples=2", "data.spacing_mm=null",
         "data.min_foreground_fraction=0.0"]  # fmt: skip


@pytest.fixture(scope="module")
def scan_and_mask(tmp_path_factory):
    """A 64 x 64 x 16 crop of the sample CT (2 mm voxels) and a label file with an ellipsoid region on its grid."""
    folder = tmp_path_factory.mktemp("inpaint")
    ct = read_image(os.path.join(REPO, "sample_data", "ct_body_3d.nii.gz"))
    crop = ct.as_tensor()[:, 32:96, 32:96, 16:32].numpy()
    affine = np.asarray(ct.affine, dtype=np.float64).copy()
    affine[:3, 3] += affine[:3, :3] @ np.array([32.0, 32.0, 16.0])
    i, j, k = np.meshgrid(np.arange(64), np.arange(64), np.arange(16), indexing="ij")
    region = ((i - 30) / 9.0) ** 2 + ((j - 34) / 6.0) ** 2 + ((k - 8) / 4.0) ** 2 <= 1.0
    image_path, mask_path = str(folder / "ct.nii.gz"), str(folder / "mask.nii.gz")
    write_image(make_image(crop, affine, {"modality": "CT"}), image_path)
    write_image(make_image(region[None].astype(np.int16) * 3, affine, {"modality": ""}), mask_path)
    (folder / "masks.csv").write_text(f"image,mask\n{image_path},{mask_path}\n")
    return {"image": image_path, "mask": mask_path, "csv": str(folder / "masks.csv"), "region": region,
            "voxels": crop[0], "folder": folder}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(scan_and_mask, tmp_path_factory) -> dict[int, str]:
    """Tiny inpaint checkpoints, 2D (32 x 32 slices) and 3D (16^3 patches), trained on random masks."""
    out = {}
    for dims, extra in ((2, []), (3, ["data.spatial_dims=3", "data.image_size=[16,16,16]"])):
        cfg = load_config(TrainConfig, os.path.join(REPO, "configs", "debug_cpu_inpaint.yaml"),
                          [*SHORT, f"data.source={scan_and_mask['image']}", *extra])  # fmt: skip
        out[dims] = latest_checkpoint(train(cfg, run_dir=str(tmp_path_factory.mktemp(f"run{dims}d"))))
    return out


@pytest.mark.parametrize("shape", [(48, 40), (24, 20, 16)])
def test_random_masks_are_binary_replayable_and_sized_by_their_fraction(shape):
    def draw(seed):
        return random_masks(12, shape, ["ellipsoid", "strokes"], (0.1, 0.4), torch.Generator().manual_seed(seed))

    masks = draw(0)
    assert masks.shape == (12, 1, *shape) and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(masks, draw(0)) and not torch.equal(masks, draw(1))
    fractions = masks.flatten(1).mean(1)
    assert (fractions > 0).all() and (fractions < 0.5).all()  # a region, never the whole field of view
    ellipsoids = random_masks(8, shape, ["ellipsoid"], (0.2, 0.2), torch.Generator().manual_seed(3))
    expected = np.pi * 0.1**2 if len(shape) == 2 else 4 / 3 * np.pi * 0.1**3  # semi-axes 0.1 of each side
    assert ellipsoids.flatten(1).mean(1).mean().item() == pytest.approx(expected, rel=0.25)


def test_the_generator_sees_the_image_without_its_region_and_the_composite_keeps_the_rest():
    image, output = torch.rand(2, 3, 8, 8) * 2 - 1, torch.zeros(2, 3, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 3:6] = 1
    x = masked_input(image, mask)
    assert x.shape == (2, 4, 8, 8) and torch.equal(x[:, 3:], mask)
    assert (x[:, :3][mask.expand(-1, 3, -1, -1) > 0] == 0).all()
    filled = composite(output, image, mask)
    outside = mask.expand(-1, 3, -1, -1) == 0
    assert torch.equal(filled[outside], image[outside]) and (filled[~outside] == 0).all()


def test_a_few_steps_lower_the_hole_loss_on_a_fixed_batch_with_mask_files(scan_and_mask):
    torch.manual_seed(0)
    task = TASKS.get("inpaint")
    data = ScanDataset(find_records(scan_and_mask["csv"], task.inputs), task.inputs, image_size=[32, 32],
                       window=(-1000.0, 1000.0), min_foreground_fraction=0.0, crop="center")  # fmt: skip
    batch = torch.utils.data.default_collate([data[(i, 0)] for i in range(6, 10)])
    assert batch["mask"].dtype == torch.uint8 and batch["mask"].sum() > 0  # the label file's region, binarised
    nets = {"G": build_generator("unet", in_channels=2, out_channels=1, channels=8, max_channels=16, depth=3),
            "D": build_discriminator("patchgan", in_channels=2, channels=8, num_layers=2)}  # fmt: skip
    objective = OBJECTIVES.build("inpaint", nets=nets)
    g_opt = torch.optim.Adam(nets["G"].parameters(), lr=2e-3, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(nets["D"].parameters(), lr=2e-3, betas=(0.5, 0.999))
    history = []
    for _ in range(25):
        fakes = objective.generate(batch)
        assert torch.equal(fakes["mask"], (batch["mask"] > 0).float())  # the files' masks, not random ones
        d_loss, _ = objective.d_loss(batch, fakes)
        step(d_opt, d_loss, list(nets["D"].parameters()))
        with requires_grad([nets["D"]], False):
            g_loss, stats = objective.g_loss(batch, fakes)
            step(g_opt, g_loss, list(nets["G"].parameters()))
        history.append(stats["loss_hole"].item())
    assert history[-1] < 0.5 * history[0]


@pytest.mark.parametrize("dims", [2, 3])
def test_a_trained_checkpoint_fills_the_masked_region_and_keeps_the_rest_of_the_scan(
    dims, checkpoints, scan_and_mask, tmp_path, run_cli
):
    status, _, err = run_cli("synthesize", "--checkpoint", checkpoints[dims], "--input", scan_and_mask["csv"],
                             "--out", str(tmp_path / "filled"))  # fmt: skip
    assert status == 0, err
    out = nib.load(str(tmp_path / "filled" / "synthetic_0000.nii.gz"))
    filled = np.asarray(out.dataobj, dtype=np.float32)
    np.testing.assert_allclose(out.affine, nib.load(scan_and_mask["image"]).affine, atol=1e-5)  # same grid
    region, voxels = scan_and_mask["region"], np.clip(scan_and_mask["voxels"], -1000, 1000)
    assert filled.shape == voxels.shape
    np.testing.assert_allclose(filled[~region], voxels[~region], atol=0.05)  # outside: the input itself (HU)
    assert np.abs(filled[region] - voxels[region]).mean() > 1.0  # inside: what the generator painted


def test_a_scan_without_a_mask_is_one_clear_error(checkpoints, scan_and_mask, tmp_path, run_cli):
    status, _, err = run_cli("synthesize", "--checkpoint", checkpoints[2], "--input", scan_and_mask["image"],
                             "--out", str(tmp_path / "filled"))  # fmt: skip
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "'mask' column" in lines[0], err
    assert not os.path.exists(tmp_path / "filled")


def test_crop_mask_cuts_samples_around_the_region_of_slices_that_hold_it(scan_and_mask):
    task = TASKS.get("inpaint")
    records = find_records(scan_and_mask["csv"], task.inputs)
    data = ScanDataset(records, task.inputs, image_size=[32, 32], window=(-1000.0, 1000.0), crop="mask")
    holding = sorted({int(k) for k in np.nonzero(scan_and_mask["region"])[2]})
    assert [s for _, s in data.index] == holding  # only slices that cut the region
    centres = []
    for seed in range(12):
        mask = data[(len(data) // 2, seed)]["mask"][0]
        assert mask.sum() == scan_and_mask["region"][:, :, holding[len(holding) // 2]].sum()  # all of it inside
        centres.append(mask.nonzero().float().mean(0))
    spread = torch.stack(centres).std(0)
    assert (spread > 0.5).all() and (spread < 8).all()  # centred, give or take a quarter of the sample
    with pytest.raises(Exception, match="data.crop is mask, but the records name no mask"):
        ScanDataset(find_records(scan_and_mask["image"], task.inputs), task.inputs, image_size=[32, 32], crop="mask")
