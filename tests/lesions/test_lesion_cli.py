"""`medgan simulate-lesions` end to end: outputs, byte-identical replay, DICOM SEG, batch, and bad input
(one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pydicom
import pytest
import torch

from medgan.cli.lesions import PRESETS
from medgan.data.phantoms import PHANTOMS, phantom_labels
from medgan.io import read_image, write_image
from medgan.io.image import make_image
from medgan.lesions.models import LESION_MODELS

LIVER = 7  # the liver's label in the ct_body phantom's tissue map


@pytest.fixture(scope="module")
def scan_files(tmp_path_factory):
    """A CT phantom as NIfTI and as a DICOM series, its tissue segmentation (liver = 7), and the segmentation
    on a coarser, shifted grid."""
    folder = tmp_path_factory.mktemp("scans")
    ct = PHANTOMS.build("ct_body", seed=1, shape=(96, 96, 24))
    labels, tissues = phantom_labels(ct.meta["phantom_params"])
    assert tissues[LIVER] == "liver"
    write_image(ct, folder / "ct.nii.gz")
    write_image(ct, folder / "ctdcm", to="dicom")
    affine = np.asarray(ct.affine)
    write_image(make_image(labels[None].astype(np.int16), affine, {}), folder / "seg.nii.gz")
    coarse = affine.copy()
    coarse[:3, :3] *= 2.0
    write_image(make_image(labels[None, ::2, ::2, ::2].astype(np.int16), coarse, {}), folder / "seg_coarse.nii.gz")
    far = affine.copy()
    far[:3, 3] += 5000.0
    write_image(make_image(labels[None].astype(np.int16), far, {}), folder / "seg_far.nii.gz")
    write_image(make_image(np.zeros_like(labels)[None].astype(np.int16), affine, {}), folder / "empty.nii.gz")
    return folder


def _args(folder, out, *extra, scan="ct.nii.gz", mask="seg.nii.gz", label=LIVER):
    chosen = ["--label", str(label)] if label is not None else []
    return [str(folder / scan), "--organ-mask", str(folder / mask), *chosen,
            "--preset", "ct-liver-hypo", "--n", "2", "--diameter-mm", "6:14", "--contrast", "-60:-20",
            "--seed", "3", "--out", str(out), *extra]  # fmt: skip


def test_help_lists_every_preset(run_cli):
    assert set(PRESETS) == set(LESION_MODELS.names())
    status, out, _ = run_cli("simulate-lesions", "--help")
    assert status == 0 and all(name in "".join(out.split()) for name in PRESETS)  # help may wrap at a hyphen


def test_nifti_outputs_and_byte_identical_replay(run_cli, scan_files, tmp_path):
    status, _, err = run_cli("simulate-lesions", *_args(scan_files, tmp_path / "a"))
    assert status == 0, err
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == ["ct_lesion_labels.nii.gz", "ct_lesion_records.json", "ct_lesions.json", "ct_lesions.nii.gz"]
    records = json.loads((tmp_path / "a" / "ct_lesion_records.json").read_text())
    assert records["format"] == "medgan-lesions" and records["request"]["seed"] == 3
    lesion = records["lesions"][0]
    for key in ("centre_mm", "centre_voxel", "lesion_seed", "shape", "intensity", "scan"):
        assert key in lesion
    assert lesion["seed"] == 3
    for key in ("volume_ml", "equivalent_diameter_mm", "longest_diameter_mm", "mean_contrast"):
        assert key in lesion["measured"]
    edited = read_image(tmp_path / "a" / "ct_lesions.nii.gz")
    labels = read_image(tmp_path / "a" / "ct_lesion_labels.nii.gz")
    original = read_image(scan_files / "ct.nii.gz")
    assert edited.meta["modality"] == "CT" and edited.dtype == original.dtype
    assert np.allclose(np.asarray(edited.affine), np.asarray(original.affine))
    assert sorted(torch.unique(labels).tolist()) == [0, 1, 2]
    again = [*_args(scan_files, tmp_path / "b")[:5], "--replay", str(tmp_path / "a" / "ct_lesion_records.json"),
             "--out", str(tmp_path / "b")]  # fmt: skip
    status, _, err = run_cli("simulate-lesions", *again)
    assert status == 0, err
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    status, _, _ = run_cli("simulate-lesions", *_args(scan_files, tmp_path / "c"))  # the same seed, again
    assert (tmp_path / "a" / "ct_lesions.nii.gz").read_bytes() == (tmp_path / "c" / "ct_lesions.nii.gz").read_bytes()


def test_a_mask_on_another_overlapping_grid_is_resampled(run_cli, scan_files, tmp_path):
    status, _, err = run_cli("simulate-lesions", *_args(scan_files, tmp_path, mask="seg_coarse.nii.gz"))
    assert status == 0, err
    labels = read_image(tmp_path / "ct_lesion_labels.nii.gz").numpy()[0]
    segmentation = read_image(scan_files / "seg.nii.gz").numpy()[0]
    near_liver = np.zeros_like(segmentation, bool)  # the coarse mask's liver, give or take a coarse voxel
    for shift in np.ndindex(3, 3, 3):
        near_liver |= np.roll(segmentation == LIVER, np.subtract(shift, 1), axis=(0, 1, 2))
    assert (labels > 0).any() and near_liver[labels > 0].all()


BAD_INPUTS = {
    "mask on a grid that does not overlap": (dict(mask="seg_far.nii.gz"), r"does not overlap the image .* voxels of"),
    "empty organ": (dict(mask="empty.nii.gz", label=None), r"empty.nii.gz: the organ mask is empty"),
    "missing label": (dict(extra=("--label", "99")), r"label 99 is not in the organ mask \(labels present: 1, 2"),
    "lesions that cannot fit": (dict(extra=("--n", "60")), r"lesion \d+ of 60 .* does not fit"),
    "diameter larger than the organ": (dict(extra=("--diameter-mm", "150:200")), r"do not fit in the organ"),
    "reversed range": (dict(extra=("--diameter-mm", "20:5")), r"the low end is above the high end"),
    "unknown preset": (dict(extra=("--preset", "ct-livr-hypo")), r"did you mean 'ct-liver-hypo'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(run_cli, scan_files, tmp_path, case):
    options, pattern = BAD_INPUTS[case]
    args = _args(
        scan_files, tmp_path / "out", mask=options.get("mask", "seg.nii.gz"), label=options.get("label", LIVER)
    )
    args += list(options.get("extra", ()))
    status, _, err = run_cli("simulate-lesions", *args)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medgan: error:"), err
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_a_checkpoint_of_another_task_is_refused(run_cli, scan_files, tmp_path):
    checkpoint = tmp_path / "pix2pix.pt"
    torch.save({"format_version": 1, "config": {"task": "pix2pix"}, "step": 10, "networks": {}}, checkpoint)
    status, _, err = run_cli("simulate-lesions", *_args(scan_files, tmp_path / "out"), "--model", str(checkpoint))
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "task 'pix2pix'; learned lesion content needs an inpaint checkpoint" in err
    assert not (tmp_path / "out").exists()


def test_existing_outputs_need_overwrite_and_replay_refuses_another_grid(run_cli, scan_files, tmp_path):
    assert run_cli("simulate-lesions", *_args(scan_files, tmp_path))[0] == 0
    status, _, err = run_cli("simulate-lesions", *_args(scan_files, tmp_path))
    assert status == 2 and "already exists; pass --overwrite" in err
    assert run_cli("simulate-lesions", *_args(scan_files, tmp_path), "--overwrite")[0] == 0
    records = json.loads((tmp_path / "ct_lesion_records.json").read_text())
    records["image"]["shape"] = [10, 10, 10]
    (tmp_path / "moved.json").write_text(json.dumps(records))
    status, _, err = run_cli("simulate-lesions", str(scan_files / "ct.nii.gz"), "--organ-mask",
                             str(scan_files / "seg.nii.gz"), "--label", str(LIVER), "--replay",
                             str(tmp_path / "moved.json"), "--out", str(tmp_path / "again"))  # fmt: skip
    assert status == 2 and "the records were made on another grid" in err
    assert not (tmp_path / "again").exists()


def test_dicom_in_gives_a_derived_series_and_a_seg_that_references_it(run_cli, scan_files, tmp_path):
    import highdicom as hd

    args = _args(scan_files, tmp_path, scan="ctdcm")
    status, _, err = run_cli("simulate-lesions", *args)
    assert status == 0, err
    series = tmp_path / "ctdcm_lesions"
    files = sorted(series.iterdir())
    first = pydicom.dcmread(files[0])
    assert first.SyntheticData == "YES" and first.ImageType[0] == "DERIVED" and first.Modality == "CT"
    slices = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in files)}
    seg = hd.seg.segread(tmp_path / "ctdcm_seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID and seg.StudyInstanceUID == first.StudyInstanceUID
    volume = read_image(series)
    mask = np.zeros(volume.shape[1:], np.int16)
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(position, [float(v) for v in slices[source].ImagePositionPatient])
        k = int(slices[source].InstanceNumber) - 1
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        mask[:, :, k][seg.pixel_array[index].T > 0] = number
    records = json.loads((tmp_path / "ctdcm_lesion_records.json").read_text())["lesions"]
    assert seg.number_of_segments == len(records) == 2
    for record in records:  # the SEG's masks are the lesions': the right size at the right place
        voxels = np.argwhere(mask == record["label"])
        assert len(voxels) == record["measured"]["voxels"]
        assert np.allclose(voxels.mean(0), record["centre_voxel"], atol=1.0)


def test_seg_validates_with_dciodvfy(run_cli, scan_files, tmp_path):
    import subprocess

    import external

    tool = external.external_tool("dciodvfy", "dicom3tools")
    assert run_cli("simulate-lesions", *_args(scan_files, tmp_path, scan="ctdcm"))[0] == 0
    result = subprocess.run([tool, str(tmp_path / "ctdcm_seg.dcm")], capture_output=True, text=True, check=False)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)


def test_batch_goes_on_past_a_bad_scan_and_reports(run_cli, scan_files, tmp_path):
    scans, masks = tmp_path / "scans", tmp_path / "masks"
    scans.mkdir()
    masks.mkdir()
    for name in ("a", "b"):
        (scans / f"{name}.nii.gz").write_bytes((scan_files / "ct.nii.gz").read_bytes())
        (scans / f"{name}.json").write_bytes((scan_files / "ct.json").read_bytes())
    (masks / "a.nii.gz").write_bytes((scan_files / "seg.nii.gz").read_bytes())  # b has no mask
    status, _, err = run_cli("simulate-lesions", str(scans), "--organ-mask", str(masks), "--label", str(LIVER),
                               "--n", "1", "--diameter-mm", "8", "--out", str(tmp_path / "out"))  # fmt: skip
    assert status == 1 and "1 of 2 scans failed" in err and "no organ mask" in err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {row["name"]: row["status"] for row in report} == {"a": "ok", "b": "failed"}
    assert (tmp_path / "out" / "a_lesions.nii.gz").is_file()
    assert (tmp_path / "out" / "report.csv").read_text().startswith("name,status,lesions")


def test_an_inpaint_checkpoint_without_its_training_record_is_one_line(run_cli, scan_files, tmp_path):
    """A file that claims the inpaint task but was not written by medgan train is refused before any scan is read."""
    checkpoint = tmp_path / "inpaint.pt"
    torch.save({"format_version": 1, "config": {"task": "inpaint"}, "step": 10, "networks": {}}, checkpoint)
    status, _, err = run_cli("simulate-lesions", *_args(scan_files, tmp_path / "out"), "--model", str(checkpoint))
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "holds no data record" in err and not (tmp_path / "out").exists()
