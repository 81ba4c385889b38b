"""Paired training data (pix2pix sources, label maps) is matched to its image by physical position,
on real scans: the Colin27 T1 and atlases of mricron-data, and a real DICOM series built from it.

Expected values are worked out here with nibabel and plain numpy, independently of medgan's code.
"""

from __future__ import annotations

import external
import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from medgan.data.datasets import ScanDataset
from medgan.data.records import find_records
from medgan.data.transforms import LoadScand
from medgan.errors import InputError
from medgan.tasks import TASKS

CROP = (slice(40, 140), slice(50, 170), slice(40, 130))  # the head of ch2.nii.gz, to keep the tests quick


def templates():
    folder = external.debian_package("mricron-data") / "usr/share/mricron/templates"
    if not (folder / "ch2.nii.gz").is_file():
        external.unavailable(f"{folder} lacks ch2.nii.gz")
    return folder


def store(path, data, affine, axcodes):
    """Write `data` (on `affine`) stored in the axis order `axcodes`: the same voxels in space."""
    change = ornt_transform(io_orientation(affine), axcodes2ornt(axcodes))
    moved = apply_orientation(data, change)
    nib.Nifti1Image(moved, affine @ inv_ornt_aff(change, data.shape)).to_filename(str(path))
    return str(path)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A crop of the Colin27 T1 stored RAS, and the same voxels stored LAS and PSR."""
    ch2 = nib.load(str(templates() / "ch2.nii.gz"))
    data = np.asarray(ch2.dataobj)[CROP].astype(np.int16)
    affine = ch2.affine.copy()
    affine[:3, 3] = ch2.affine[:3, :3] @ [s.start for s in CROP] + ch2.affine[:3, 3]
    folder = tmp_path_factory.mktemp("head")
    return {code: store(folder / f"{code}.nii.gz", data, affine, tuple(code)) for code in ("RAS", "LAS", "PSR")}


def load(**record):
    keys = [k for k in ("image", "source", "label_map") if k in record]
    return LoadScand(keys, None, 3, label_keys=["label_map"])(record)


@pytest.mark.parametrize("stored", ["LAS", "PSR"])
def test_the_same_grid_in_another_storage_order_is_permuted_and_flipped_exactly(head, stored):
    out = load(image=head["RAS"], source=head[stored])
    assert torch.equal(out["source"], out["image"])  # exact: no interpolation, not mirrored
    assert out["source_meta"]["affine"] == out["image_meta"]["affine"]


def test_a_pix2pix_dataset_pairs_a_mirrored_copy_with_its_image_voxel_for_voxel(tmp_path, head):
    (tmp_path / "pairs.csv").write_text(f"image,source\n{head['RAS']},{head['LAS']}\n")
    pix2pix = TASKS.get("pix2pix").inputs
    data = ScanDataset(find_records(str(tmp_path / "pairs.csv"), pix2pix), pix2pix, spatial_dims=2,
                       image_size=[32, 32], spacing_mm=[4.0, 4.0], window=(0, 150), source_window=(0, 150))  # fmt: skip
    sample = data[(len(data) // 2, 3)]
    assert torch.equal(sample["source"], sample["image"]) and sample["image"].std() > 0.1


def test_a_dicom_series_stored_lps_beside_a_nifti_stored_ras_of_the_same_grid(real_series, tmp_path):
    series = real_series("mr_sagittal")  # sagittal slices, rows head to foot: an LPS-ordered scanner series
    nifti = store(tmp_path / "t1.nii.gz", series.voxels.astype(np.int16), series.affine, ("R", "A", "S"))
    out = load(image=nifti, source=str(series.folder))
    assert out["source"].shape == out["image"].shape == (1, 53, 217, 181)  # x, y, z
    assert torch.equal(out["source"], out["image"])


def test_another_grid_is_resampled_onto_the_image_linear_for_images(real_series):
    series = real_series("mr_sagittal")  # every third sagittal plane of ch2, so ch2 sampled there is exact
    out = load(image=str(series.folder), source=str(templates() / "ch2.nii.gz"))
    assert out["source"].shape == out["image"].shape == (1, *series.voxels.shape)
    assert np.allclose(out["source"][0].numpy(), series.voxels, atol=0.01)  # float32 sampling positions


def test_a_label_map_on_another_grid_takes_the_nearest_label_at_the_same_place():
    folder = templates()
    atlas = nib.load(str(folder / "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz"))  # LAS, 182 x 218 x 182
    image = nib.load(str(folder / "ch2.nii.gz"))  # RAS, 181 x 217 x 181
    out = load(image=str(folder / "ch2.nii.gz"), label_map=str(folder / "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz"))
    labels = out["label_map"][0].numpy()
    assert labels.shape == image.shape and out["label_map"].dtype == torch.int64
    # Where each sampled ch2 voxel lies in the atlas, by nibabel's affines alone.
    ijk = np.stack(np.meshgrid(*[np.arange(0, n, 7) for n in image.shape], indexing="ij"), -1).reshape(-1, 3)
    world = image.affine @ np.c_[ijk, np.ones(len(ijk))].T
    there = np.rint(np.linalg.inv(atlas.affine) @ world)[:3].T.astype(int)
    inside = ((there >= 0) & (there < atlas.shape)).all(1)
    expected = np.zeros(len(ijk), int)
    expected[inside] = np.asarray(atlas.dataobj)[tuple(there[inside].T)]
    assert np.array_equal(labels[tuple(ijk.T)], expected)
    assert len(np.unique(labels)) > 40  # the atlas's cortical labels, not one mirrored blur


def test_a_2mm_label_map_beside_a_1mm_image_trains_on_the_image_grid(tmp_path):
    folder = templates()
    (tmp_path / "pairs.csv").write_text(f"image,label_map\n{folder / 'ch2.nii.gz'},"
                                        f"{folder / 'JHU-WhiteMatter-labels-2mm.nii.gz'}\n")  # fmt: skip
    label2image = TASKS.get("label2image").inputs
    data = ScanDataset(find_records(str(tmp_path / "pairs.csv"), label2image), label2image, image_size=[64, 64],
                       window=(0, 150), slice_range=(0.5, 0.52))  # fmt: skip
    sample = data[(0, 1)]
    assert sample["image"].shape == (1, 64, 64) and sample["label_map"].shape == (1, 64, 64)
    assert data.record["num_labels"] > 40


def test_a_pair_that_does_not_overlap_in_space_is_refused_naming_both_files_and_grids(tmp_path, head):
    moved = nib.load(head["RAS"])
    far = tmp_path / "far.nii.gz"
    nib.Nifti1Image(np.asarray(moved.dataobj), moved.affine + np.c_[np.zeros((4, 3)), [500, 0, 0, 0]]).to_filename(
        str(far)
    )
    with pytest.raises(InputError) as info:
        load(image=head["RAS"], source=str(far))
    message = str(info.value)
    assert "does not overlap" in message and head["RAS"] in message and str(far) in message
    assert "100x120x90 voxels of 1x1x1 mm, RAS" in message and len(message.splitlines()) == 1
    flat = tmp_path / "flat.nii.gz"
    nib.Nifti1Image(np.asarray(moved.dataobj)[:, :, 0], moved.affine).to_filename(str(flat))
    with pytest.raises(InputError, match="both 2D or both 3D"):
        LoadScand(["image", "label_map"], None, 2, label_keys=["label_map"])(
            {"image": head["RAS"], "label_map": str(flat)}
        )


def test_a_label_map_with_fractional_values_is_refused_as_an_intensity_image(tmp_path, head):
    ch2 = nib.load(head["RAS"])
    blurred = tmp_path / "t1_float.nii.gz"
    nib.Nifti1Image(np.asarray(ch2.dataobj) * np.float32(0.37), ch2.affine).to_filename(str(blurred))
    with pytest.raises(InputError, match="fractional values: an intensity image"):
        load(image=head["RAS"], label_map=str(blurred))
