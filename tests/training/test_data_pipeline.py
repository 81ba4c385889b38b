"""Training data: folders and CSVs of scans, slices and patches, windows, resampling, replayable order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medgan.data.datasets import ScanDataset
from medgan.data.records import find_records
from medgan.data.sampling import StepBatchSampler
from medgan.data.transforms import from_unit, resample, to_unit
from medgan.errors import InputError
from medgan.io import write_image
from medgan.io.image import make_image


def write_volume(path, shape=(12, 10, 8), spacing=(2.0, 2.0, 3.0), empty_slices=(0, 1, 7), value=40.0):
    """A CT-like volume: air (-1000 HU) with a block of tissue, its first/last axial slices empty."""
    array = np.full((1, *shape), -1000.0, np.float32)
    tissue = [k for k in range(shape[2]) if k not in empty_slices]
    for n, k in enumerate(tissue):
        array[0, 2:-2, 2:-2, k] = value + n  # each slice its own value
    write_image(make_image(array, np.diag([*spacing, 1.0]), {"modality": "CT"}), str(path))
    return str(path)


def test_a_folder_without_images_is_one_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no scans here")
    with pytest.raises(InputError, match="no readable"):
        find_records(str(tmp_path))


def test_csv_rows_name_scans_relative_to_the_csv_and_classes_must_be_integers(tmp_path):
    write_volume(tmp_path / "a.nii.gz")
    (tmp_path / "data.csv").write_text("image,label\na.nii.gz,1\n")
    assert find_records(str(tmp_path / "data.csv")) == [
        {"image": str(tmp_path / "a.nii.gz"), "label": 1, "csv": str(tmp_path / "data.csv"), "csv_line": 2}
    ]
    (tmp_path / "bad.csv").write_text("image,label\na.nii.gz,tumour\n")
    with pytest.raises(InputError, match="line 2"):
        find_records(str(tmp_path / "bad.csv"))


def test_slices_skip_empty_ones_and_record_the_window(tmp_path):
    records = find_records(write_volume(tmp_path / "ct.nii.gz"))
    data = ScanDataset(records, spatial_dims=2, image_size=[8, 8], window=(-1000.0, 1000.0), cache="none")
    assert [s for _, s in data.index] == [2, 3, 4, 5, 6]  # 0, 1 and 7 hold only air
    sample = data[(0, 0)]["image"]
    assert sample.shape == (1, 8, 8) and sample.min() >= -1 and sample.max() <= 1
    # The recorded window maps samples back to HU: slice 2 holds 40 + 0 HU.
    assert from_unit(sample, *data.record["window"]).max().item() == pytest.approx(40.0, abs=1e-3)
    assert data.record["spacing_mm"] == [2.0, 2.0] and data.record["slice_spacing_mm"] == 3.0


def test_percentile_window_slab_channels_and_center_crop(tmp_path):
    records = find_records(write_volume(tmp_path / "ct.nii.gz"))
    data = ScanDataset(records, image_size=[6, 6], slab_slices=3, crop="center", window_percentiles=(0, 100))
    assert data.record["window"] == [-1000.0, 44.0]
    sample = data[(0, 0)]["image"]
    assert sample.shape == (3, 6, 6) and data.record["channels"] == 3
    single = ScanDataset(records, image_size=[6, 6], crop="center", window_percentiles=(0, 100))[(0, 0)]["image"]
    assert torch.equal(sample[1:2], single)  # the slab's middle channel is the slice itself


def test_resampling_to_a_spacing_keeps_the_field_of_view_and_labels(tmp_path):
    array = torch.arange(16.0).reshape(1, 4, 4)
    half = resample(array, [1.0, 1.0], [2.0, 2.0])
    assert half.shape == (1, 2, 2) and half[0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    labels = torch.tensor([[[0, 0, 3, 3], [0, 0, 3, 3]]])
    assert set(resample(labels, [1.0, 1.0], [0.5, 0.5], labels=True).unique().tolist()) == {0, 3}
    data = ScanDataset(find_records(write_volume(tmp_path / "ct.nii.gz")), image_size=[6, 5], spacing_mm=[4.0, 4.0],
                       window=(-1000.0, 1000.0))  # fmt: skip
    assert data[(0, 0)]["image"].shape == (1, 6, 5) and data.record["spacing_mm"] == [4.0, 4.0]


def test_samples_replay_by_seed_and_3d_patches_are_random_crops(tmp_path):
    records = find_records(write_volume(tmp_path / "ct.nii.gz", empty_slices=()))
    data = ScanDataset(records, spatial_dims=3, image_size=[4, 4, 4], window=(-1000.0, 1000.0))
    assert len(data) == 1 and data[(0, 7)]["image"].shape == (1, 4, 4, 4)
    assert torch.equal(data[(0, 7)]["image"], data[(0, 7)]["image"])
    crops = {data[(0, seed)]["image"].sum().item() for seed in range(20)}
    assert len(crops) > 1


def test_unit_window_round_trip():
    hu = torch.tensor([-1000.0, 0.0, 1000.0])
    assert torch.allclose(from_unit(to_unit(hu, -1000, 1000), -1000, 1000), hu)


def test_batches_depend_only_on_seed_and_step_and_ranks_share_epochs():
    def take(sampler, n):
        return list(itertools.islice(iter(sampler), n))

    whole = take(StepBatchSampler(10, 3, seed=4), 8)
    assert take(StepBatchSampler(10, 3, seed=4, start_step=5), 3) == whole[5:8]  # resuming continues the stream
    assert take(StepBatchSampler(10, 3, seed=5), 8) != whole
    first_epoch = [i for batch in take(StepBatchSampler(10, 1, seed=4), 10) for i, _ in batch]
    assert sorted(first_epoch) == list(range(10))  # every sample once per epoch
    rank0 = [i for b in take(StepBatchSampler(10, 5, seed=1, rank=0, world_size=2), 1) for i, _ in b]
    rank1 = [i for b in take(StepBatchSampler(10, 5, seed=1, rank=1, world_size=2), 1) for i, _ in b]
    assert sorted(rank0 + rank1) == list(range(10))  # disjoint shards of one epoch
