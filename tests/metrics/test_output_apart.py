"""`medgan evaluate --out` must never be, hold or lie inside an input: `--overwrite` replaces the
whole report folder, which once deleted the user's images."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from medgan.data.phantoms import PHANTOMS
from medgan.errors import OutputError
from medgan.io import write_image
from medgan.metrics.evaluate import evaluate_sets
from medgan.metrics.pairs import evaluate_pairs


def write_set(folder, seeds, shape=(48, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        write_image(PHANTOMS.build("ct_body", spatial_dims=2, seed=seed, shape=shape), folder / f"s{seed:03d}.nii.gz")
        (folder / f"s{seed:03d}.json").write_text(json.dumps({"Modality": "CT"}))
    return folder


def snapshot(root):
    """Every file under `root` with its SHA-256: the inputs must come out untouched."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                files[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return files


def refused(status, err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("medgan: error: "), err
    assert "choose an --out apart from the inputs" in lines[0], err
    return lines[0]


@pytest.fixture
def sets(tmp_path):
    write_set(tmp_path / "data" / "real", range(3))
    write_set(tmp_path / "data" / "fake", range(10, 13))
    write_set(tmp_path / "train", range(20, 23))
    return tmp_path


def evaluate_over(run_cli, sets, out, *extra):
    """`medgan evaluate` of the sets' real and fake images into `out`, with --overwrite."""
    return run_cli("evaluate", "--real", sets / "data" / "real", "--fake", sets / "data" / "fake", "--out", out,
                   "--overwrite", "--no-progress", *extra)  # fmt: skip


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        ("data/real", "the report folder is the real set"),
        ("data", "the report folder contains the real set"),  # parent of real and fake
        (".", "the report folder contains the real set"),
        ("data/fake/report", "the report folder lies inside the fake set"),
        ("train", "the report folder is the training set"),
    ],
)
def test_sets_out_overlapping_an_input_is_refused_and_nothing_is_touched(sets, out, expected, run_cli):
    before = snapshot(sets)
    status, _, err = evaluate_over(run_cli, sets, sets / out, "--train", sets / "train", "--metrics", "intensity")
    assert expected in refused(status, err)
    assert snapshot(sets) == before


def test_symlinked_out_and_symlinked_images_are_resolved(sets, tmp_path):
    alias = tmp_path / "alias"
    alias.symlink_to(sets / "data" / "real", target_is_directory=True)
    with pytest.raises(OutputError, match="is the real set"):
        evaluate_sets(sets / "data" / "real", sets / "data" / "fake", alias, metrics=["intensity"], overwrite=True)
    # an image of the fake set that is a link into another folder: that folder is an input too
    elsewhere = write_set(tmp_path / "elsewhere", [40])
    (sets / "data" / "fake" / "linked.nii.gz").symlink_to(elsewhere / "s040.nii.gz")
    before = snapshot(elsewhere)
    with pytest.raises(OutputError, match="contains the fake image"):
        evaluate_sets(sets / "data" / "real", sets / "data" / "fake", elsewhere, metrics=["intensity"], overwrite=True)
    assert snapshot(elsewhere) == before


def test_out_holding_the_extractor_file_is_refused(sets, run_cli):
    weights = sets / "nets" / "net.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"not read before the check")
    status, _, err = evaluate_over(run_cli, sets, sets / "nets", "--extractor-file", weights, "--extractor-sha256",
                                   "0" * 64, "--extractor-arch", "random_cnn")  # fmt: skip
    assert "the report folder is" not in err and "contains the extractor file" in refused(status, err)
    assert weights.read_bytes() == b"not read before the check"


def test_pairs_out_holding_the_csv_or_a_listed_image_is_refused(tmp_path, run_cli):
    write_set(tmp_path / "refs", [0, 1])
    write_set(tmp_path / "tests", [0, 1])
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "pairs.csv").write_text(
        "reference,test\n../refs/s000.nii.gz,../tests/s000.nii.gz\n../refs/s001.nii.gz,../tests/s001.nii.gz\n"
    )
    before = snapshot(tmp_path)
    base = ["evaluate", "--pairs", tmp_path / "lists" / "pairs.csv", "--overwrite", "--no-progress", "--out"]
    status, _, err = run_cli(*base, tmp_path / "lists")
    assert "contains the pairs file" in refused(status, err)
    status, _, err = run_cli(*base, tmp_path / "tests")
    assert "contains the test of line 2" in refused(status, err)
    status, _, err = run_cli(*base, tmp_path / "refs" / "s001.nii.gz")
    assert "is the reference of line 3" in refused(status, err)
    assert snapshot(tmp_path) == before
    # a report folder beside the CSV, apart from every listed file, is fine
    status, _, err = run_cli(*base, tmp_path / "lists" / "report")
    assert status == 0, err
    assert (tmp_path / "lists" / "report" / "metrics.json").is_file()


def test_library_call_refuses_too(tmp_path):
    write_set(tmp_path / "refs", [0])
    (tmp_path / "pairs.csv").write_text("reference,test\nrefs/s000.nii.gz,refs/s000.nii.gz\n")
    with pytest.raises(OutputError, match="contains the pairs file"):
        evaluate_pairs(tmp_path / "pairs.csv", tmp_path, overwrite=True, progress=False)
    assert (tmp_path / "pairs.csv").is_file() and (tmp_path / "refs" / "s000.nii.gz").is_file()
