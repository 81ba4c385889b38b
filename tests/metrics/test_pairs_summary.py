"""The pairs summary says what its mean covers: finite values only, with infinite (identical
images) and NaN (a mask with no room for the SSIM window) counted apart and the NaN pairs named."""

from __future__ import annotations

import json

import numpy as np

from medgan.data.phantoms import PHANTOMS
from medgan.io import write_image
from medgan.metrics.pairs import summary_line


def test_identical_and_border_masked_pairs_are_counted_apart(tmp_path, run_cli):
    clean = PHANTOMS.build("ct_body", spatial_dims=2, seed=1, shape=(64, 64))
    noisy = clean.clone()
    noisy.array = (clean.array + np.random.default_rng(0).normal(0, 40, clean.shape)).astype(np.int16)
    edge = clean.clone()
    edge.array = np.zeros(clean.shape, np.uint8)
    edge.array[..., :3, :] = 1  # a strip along the border: no voxel where the 11-voxel window fits
    for name, image in (("clean", clean), ("noisy", noisy), ("edge", edge)):
        write_image(image, tmp_path / f"{name}.nii.gz")
    (tmp_path / "clean.json").write_text(json.dumps({"Modality": "CT"}))
    rows = "clean.nii.gz,noisy.nii.gz,\nclean.nii.gz,clean.nii.gz,\nclean.nii.gz,noisy.nii.gz,edge.nii.gz\n"
    (tmp_path / "pairs.csv").write_text("reference,test,mask\n" + rows)
    status, stdout, err = run_cli(
        "evaluate", "--pairs", tmp_path / "pairs.csv", "--out", tmp_path / "r", "--metrics", "psnr,ssim,mae",
        "--no-progress",
    )  # fmt: skip
    assert status == 0, err
    summary = json.loads((tmp_path / "r" / "metrics.json").read_text())["summary"]
    psnr, ssim = summary["psnr"], summary["ssim"]
    assert (psnr["pairs"], psnr["finite"], psnr["infinite"], psnr["nan"]) == (3, 2, 1, 0)
    assert (ssim["pairs"], ssim["finite"], ssim["infinite"], ssim["nan"]) == (3, 2, 0, 1)
    assert ssim["median"] != "nan" and ssim["max"] == 1.0
    psnr_line = next(line for line in stdout.splitlines() if line.startswith("psnr"))
    assert "over 2 of 3 pairs" in psnr_line and "1 infinite" in psnr_line and "NaN" not in psnr_line
    ssim_line = next(line for line in stdout.splitlines() if line.startswith("ssim"))
    assert "over 2 of 3 pairs" in ssim_line and "1 NaN" in ssim_line and "infinite" not in ssim_line
    assert "medgan: warning: line 4: ssim is NaN: the mask has no voxel where the 11-voxel SSIM window fits" in err


def test_summary_line_without_any_finite_value():
    stats = {"mean": None, "std": 0.0, "median": None, "pairs": 2, "finite": 0, "infinite": 0, "nan": 2}
    assert summary_line(stats) == "no finite value in 2 pairs (2 NaN)"
