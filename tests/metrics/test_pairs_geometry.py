"""`medgan evaluate --pairs` compares voxels at the same place in space: a test image stored in
another voxel order (RAS vs LPS, swapped axes) is reordered exactly onto its reference; any other
grid (spacing, origin, obliquity) stops the run with one line naming the line, files and grids."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medgan.data.phantoms import PHANTOMS
from medgan.errors import InputError
from medgan.io.geometry import GridMismatch
from medgan.metrics.grid import Grid, align
from medgan.metrics.pairs import evaluate_pairs

# An LPS grid (the DICOM way) with anisotropic voxels and an origin away from 0.
LPS = np.array([[-0.8, 0, 0, 40.0], [0, -0.8, 0, 30.0], [0, 0, 2.5, -20.0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """A CT phantom volume, a noisy copy and a body mask, all on the LPS grid; plus reordered copies."""
    root = tmp_path_factory.mktemp("geometry")
    clean = np.asarray(PHANTOMS.build("ct_body", spatial_dims=3, seed=3, shape=(40, 36, 12)).array)[0]
    rng = np.random.default_rng(0)
    noisy = (clean + rng.normal(0, 60, clean.shape)).astype(np.int16)
    body = (clean > -500).astype(np.uint8)
    body[:, :, :2] = 0  # not symmetric, so a wrong flip of the mask would change the scores
    for name, array in (("ref", clean.astype(np.int16)), ("test", noisy), ("mask", body)):
        image = nib.Nifti1Image(array, LPS)
        nib.save(image, root / f"{name}.nii.gz")
        nib.save(nib.as_closest_canonical(image), root / f"{name}_ras.nii.gz")  # what many tools write
    # axes i and j swapped and k reversed: still the same points in space
    swapped = np.flip(np.transpose(noisy, (1, 0, 2)), 2)
    affine = LPS[:, [1, 0, 2, 3]].copy()
    affine[:3, 2] *= -1
    affine[:3, 3] = LPS[:3, :3] @ [0, 0, noisy.shape[2] - 1] + LPS[:3, 3]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(swapped), affine), root / "test_swapped.nii.gz")
    (root / "ref.json").write_text(json.dumps({"Modality": "CT"}))
    return root


def run_pairs(root, rows, out, **options):
    csv = root / f"{out}.csv"
    csv.write_text("reference,test,mask\n" + "".join(f"{','.join(row)}\n" for row in rows))
    return evaluate_pairs(csv, root / out, progress=False, overwrite=True, **options)


def test_reordered_copies_score_exactly_like_the_original(scans):
    record = run_pairs(
        scans,
        [
            ("ref.nii.gz", "test.nii.gz", "mask.nii.gz"),
            ("ref.nii.gz", "test_ras.nii.gz", "mask_ras.nii.gz"),
            ("ref.nii.gz", "test_swapped.nii.gz", "mask.nii.gz"),
            ("ref.nii.gz", "ref_ras.nii.gz", ""),
        ],
        "reordered",
    )
    original, ras, swapped, same = record["pairs"]
    assert original["psnr"] < 40  # the noise is measured...
    for metric in ("psnr", "ssim", "ms_ssim", "mae", "rmse"):
        assert ras[metric] == original[metric] and swapped[metric] == original[metric], metric
    assert same["psnr"] == float("inf") and same["mae"] == 0  # ...and a reordered copy is identical
    notes = " ".join(record["warnings"])
    assert "4 image(s) stored in another voxel order" in notes
    assert "line 3: test test_ras.nii.gz (RAS) onto reference ref.nii.gz (LPS)" in notes


@pytest.mark.parametrize(
    ("change", "reason", "shown"),
    [
        ("spacing", "the spacing or direction differs", "1.6x1.6x5 mm"),
        ("origin", "the origins differ", "first voxel at (40.8, 30, -20) mm"),
        ("oblique", "the spacing or direction differs", "oblique"),
    ],
)
def test_other_grids_are_refused_naming_line_files_and_grids(scans, change, reason, shown, run_cli):
    image = nib.load(scans / "test.nii.gz")
    affine = LPS.copy()
    if change == "spacing":
        affine[:3, :3] *= 2
    elif change == "origin":
        affine[0, 3] += 0.8  # one voxel
    else:
        turn = np.radians(10)
        rotation = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
        affine[:3, :3] = rotation @ affine[:3, :3]
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), scans / f"test_{change}.nii.gz")
    (scans / "bad.csv").write_text(f"reference,test\nref.nii.gz,test.nii.gz\nref.nii.gz,test_{change}.nii.gz\n")
    status, _, err = run_cli("evaluate", "--pairs", scans / "bad.csv", "--out", scans / "bad", "--no-progress")
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1, err
    line = lines[0]
    assert f"bad.csv: line 3: test test_{change}.nii.gz is not on the voxel grid of reference ref.nii.gz" in line
    assert f"({reason})" in line and shown in line
    assert "reference 40x36x12 voxels of 0.8x0.8x2.5 mm, LPS, first voxel at (40, 30, -20) mm" in line
    assert not (scans / "bad").exists()


def test_align_handles_single_slices_and_refuses_other_extents():
    # a 2D slice: the thickness of the unit axis is irrelevant, its normal is not
    slice_2d = np.arange(12.0).reshape(3, 4)
    thin = Grid.of((3, 4), np.diag([1.0, 1.0, 1.0, 1.0]))
    thick = Grid.of((3, 4, 1), np.diag([1.0, 1.0, 5.0, 1.0]))
    aligned, reordered = align(slice_2d, thick, thin)
    assert not reordered and np.array_equal(aligned.reshape(3, 4), slice_2d)
    # a 3 x 3 affine of a 2D reader, flipped along j
    flipped = Grid.of((3, 4), np.array([[1.0, 0, 0], [0, -1.0, 3.0], [0, 0, 1]]))
    aligned, reordered = align(slice_2d[:, ::-1], flipped, thin)
    assert reordered and np.array_equal(aligned.reshape(3, 4), slice_2d)
    with pytest.raises(GridMismatch, match="extents"):
        align(np.zeros((4, 4)), Grid.of((4, 4), np.eye(4)), thin)


def test_mismatched_mask_grid_is_refused(scans):
    image = nib.load(scans / "mask.nii.gz")
    shifted = LPS.copy()
    shifted[2, 3] += 5.0  # two slices up
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), shifted), scans / "mask_shifted.nii.gz")
    with pytest.raises(InputError, match="line 2: mask mask_shifted.nii.gz is not on the voxel grid"):
        run_pairs(scans, [("ref.nii.gz", "test.nii.gz", "mask_shifted.nii.gz")], "maskshift")
