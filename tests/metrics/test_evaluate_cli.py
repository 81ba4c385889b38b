"""`medgan evaluate` end to end on phantom sets: metrics.json, a self-contained report.html, and
one-line errors (exit status 2) for the bad inputs users actually make."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import numpy as np
import pytest
import torch

from medgan.data.phantoms import PHANTOMS
from medgan.io import write_image
from medgan.metrics.evaluate import evaluate_sets
from medgan.metrics.image import psnr, ssim
from medgan.metrics.set_metrics import SET_METRICS


def write_set(folder, seeds, spatial_dims=2, shape=(128, 128), modality="CT"):
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        image = PHANTOMS.build("ct_body", spatial_dims=spatial_dims, seed=seed, shape=shape)
        write_image(image, folder / f"s{seed:03d}.nii.gz")
        if modality:
            (folder / f"s{seed:03d}.json").write_text(json.dumps({"Modality": modality}))
    return folder


def one_error_line(status, err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("medgan: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def sets_2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets2d")
    train = write_set(root / "train", range(0, 14))
    write_set(root / "real", range(100, 114))
    fake = write_set(root / "fake", range(200, 210))
    for seed in (2, 7):  # two planted copies of training images
        for suffix in (".nii.gz", ".json"):
            (fake / f"copy{seed:03d}{suffix}").write_bytes((train / f"s{seed:03d}{suffix}").read_bytes())
    return root


def test_sets_end_to_end_writes_named_metrics_and_a_self_contained_report(sets_2d, tmp_path, run_cli):
    out = tmp_path / "report"
    status, stdout, err = run_cli(
        "evaluate",
        "--real",
        sets_2d / "real",
        "--fake",
        sets_2d / "fake",
        "--train",
        sets_2d / "train",
        "--out",
        out,
        "--kid-subsets",
        5,
        "--no-progress",
        "--extractor",
        "random_cnn",  # one extractor, as before extractors ran side by side by default
    )
    assert status == 0, err
    record = json.loads((out / "metrics.json").read_text())
    metrics = record["metrics"]
    for key in ("fd", "kid", "precision", "recall", "density", "coverage", "memorization"):
        assert f"{key}_random_cnn" in metrics, key
    assert metrics["fd_random_cnn"] > 0 and metrics["kid_random_cnn"]["subsets"] == 5
    assert record["extractor"]["name"] == "random_cnn" and "untrained" in record["extractor"]["weights"]
    assert record["normalisation"]["low"] == -1000 and record["normalisation"]["source"].startswith("CT default")
    assert metrics["intensity_w1"]["units"] == "HU"
    assert metrics["ms_ssim_diversity"]["fake"]["scales"] == 4  # 128 px images: 4 of the 5 scales fit
    memo = metrics["memorization_random_cnn"]
    flagged = {(f["fake"], f["train_pixel_match"]) for f in memo["flagged_samples"]}
    assert flagged == {("copy002.nii.gz", "s002.nii.gz"), ("copy007.nii.gz", "s007.nii.gz")}
    assert "fd_random_cnn" in stdout and str(out / "report.html") in stdout
    assert stdout.splitlines()[0] == record["summary"]["headline"]  # the verdict against the floor comes first
    assert record["floor"]["reference"] == "train" and record["summary"]["extractor"] == "random_cnn"

    page = (out / "report.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:|//|file:)", page) and "<script" not in page
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(pngs) >= 2 * 12 + 2 * 8  # two sample grids and the suspicious pairs
    assert all(base64.b64decode(p).startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    # histogram, two PRDC scatters, the memorization histogram and the extractor-separation figure
    assert page.count("<svg") == 5 and page.count('<svg class="separation"') == 1
    assert "near-copy" in page and "copy002.nii.gz" in page
    image = pytest.importorskip("PIL.Image")
    import io

    assert image.open(io.BytesIO(base64.b64decode(pngs[0]))).size == (128, 128)


EXPECTED_KEYS = {
    "fd": {"fd_random_cnn", "fd_random_cnn_floor"},
    "kid": {"kid_random_cnn", "kid_random_cnn_floor"},
    "prdc": {
        "precision_random_cnn",
        "recall_random_cnn",
        "density_random_cnn",
        "coverage_random_cnn",
        "prdc_nearest_k",
        *(f"{m}_random_cnn_floor" for m in ("precision", "recall", "density", "coverage")),
    },
    "diversity": {"ms_ssim_diversity"},
    "intensity": {"intensity_w1", "intensity_w1_floor"},
    "memorization": {"memorization_random_cnn"},
}


@pytest.mark.parametrize("name", SET_METRICS.names())
def test_every_set_metric_alone(name, sets_2d, tmp_path):
    record = evaluate_sets(
        sets_2d / "real",
        sets_2d / "fake",
        tmp_path / "r",
        train=sets_2d / "train",
        metrics=[name],
        kid_subsets=3,
        diversity_pairs=10,
        progress=False,
        extractor="random_cnn",
    )
    assert set(record["metrics"]) == EXPECTED_KEYS[name]
    assert ("extractor" in record) == (name in {"fd", "kid", "prdc", "memorization"})
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["metrics_computed"] == [name]


def test_a_set_against_itself_has_no_intensity_distance(sets_2d, tmp_path):
    """Voxels are not resampled with replacement: identical sets are at distance 0, not sampling noise."""
    record = evaluate_sets(sets_2d / "real", sets_2d / "real", tmp_path / "r", metrics=["intensity"], progress=False)
    assert record["metrics"]["intensity_w1"]["value"] == 0.0


def test_3d_sets_natively_and_as_two_and_a_half_d(tmp_path, run_cli):
    real = write_set(tmp_path / "real", range(6), spatial_dims=3, shape=(48, 48, 24))
    fake = write_set(tmp_path / "fake", range(10, 16), spatial_dims=3, shape=(48, 48, 24))
    common = ["--metrics", "fd,prdc", "--nearest-k", 2, "--no-progress", "--extractor", "random_cnn"]
    status, _, err = run_cli("evaluate", "--real", real, "--fake", fake, "--out", tmp_path / "a", *common)
    assert status == 0, err
    record = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert record["extractor"]["mode"] == "native" and record["extractor"]["input_size"] == [64, 64, 64]
    assert "slices_per_plane" not in record["options"] and "slices_per_plane" not in record["extractor"]
    status, _, err = run_cli(
        "evaluate",
        "--real",
        real,
        "--fake",
        fake,
        "--out",
        tmp_path / "b",
        "--mode",
        "2.5d",
        "--slices-per-plane",
        3,
        "--extractor-option",
        "input_size=64",
        *common,
    )
    assert status == 0, err
    record = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert record["extractor"]["feature_dim"] == 3 * 512
    # every option that changes a number is recorded
    assert record["options"]["slices_per_plane"] == 3 and record["extractor"]["slices_per_plane"] == 3
    extractor = record["extractor"]
    assert (extractor["in_channels"], extractor["input_mean"], extractor["input_std"]) == (1, 0.5, 0.5)
    planes = record["metrics"]["fd_random_cnn_2.5d_planes"]
    assert set(planes) == {"jk", "ik", "ij", "mean"}
    assert "precision_random_cnn_2.5d" in record["metrics"]


def test_pairs_end_to_end(tmp_path, run_cli):
    rng = np.random.default_rng(0)
    rows = ["reference,test,mask"]
    for seed in range(3):
        clean = PHANTOMS.build("ct_body", spatial_dims=2, seed=seed, shape=(96, 96))
        noisy = clean.clone()
        noisy.array = (clean.array + rng.normal(0, 20 * (seed + 1), clean.shape)).astype(np.int16)
        write_image(clean, tmp_path / f"clean{seed}.nii.gz")
        write_image(noisy, tmp_path / f"noisy{seed}.nii.gz")
        (tmp_path / f"clean{seed}.json").write_text(json.dumps({"Modality": "CT"}))
        mask = ""
        if seed == 0:
            body = clean.clone()
            body.array = (clean.array > -500).astype(np.uint8)
            write_image(body, tmp_path / "mask0.nii.gz")
            mask = "mask0.nii.gz"
        rows.append(f"clean{seed}.nii.gz,noisy{seed}.nii.gz,{mask}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    status, stdout, err = run_cli(
        "evaluate", "--pairs", tmp_path / "pairs.csv", "--out", tmp_path / "r", "--no-progress"
    )
    assert status == 0, err
    record = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert record["data_range"] == 4095 and record["clip_window"] == [-1024, 3071]
    first, last = record["pairs"][0], record["pairs"][2]
    from medgan.io import read_image

    x = np.clip(read_image(tmp_path / "clean2.nii.gz")[0].numpy().astype(float), -1024, 3071)
    y = np.clip(read_image(tmp_path / "noisy2.nii.gz")[0].numpy().astype(float), -1024, 3071)
    assert last["psnr"] == pytest.approx(float(psnr(x, y, 4095.0)), rel=1e-9)
    assert last["ssim"] == pytest.approx(float(ssim(torch.from_numpy(x), torch.from_numpy(y), 4095.0)), rel=1e-9)
    assert first["psnr"] > last["psnr"] and first["mask"].endswith("mask0.nii.gz")
    assert record["summary"]["psnr"]["pairs"] == 3 and "psnr" in stdout
    assert "Worst pairs by ssim" in (tmp_path / "r" / "report.html").read_text()


# --------------------------------------------------------------------------------- bad input


def test_2d_against_3d_is_one_line(tmp_path, run_cli):
    real = write_set(tmp_path / "real", range(3))
    fake = write_set(tmp_path / "fake", range(3), spatial_dims=3, shape=(32, 32, 16))
    status, _, err = run_cli("evaluate", "--real", real, "--fake", fake, "--out", tmp_path / "o")
    line = one_error_line(status, err)
    assert "the real images are 2D (128x128) but the fake images are 3D (32x32x16)" in line
    assert not (tmp_path / "o").exists()


def test_too_few_samples_names_the_minimum(sets_2d, tmp_path, run_cli):
    lonely = write_set(tmp_path / "one", [300])
    status, _, err = run_cli(
        "evaluate", "--real", sets_2d / "real", "--fake", lonely, "--out", tmp_path / "o", "--metrics", "fd"
    )
    assert "fd needs at least 2 images per set; the fake set has 1" in one_error_line(status, err)
    status, _, err = run_cli(
        "evaluate",
        "--real",
        sets_2d / "real",
        "--fake",
        lonely,
        "--out",
        tmp_path / "o",
        "--metrics",
        "prdc",
        "--nearest-k",
        3,
    )
    assert "prdc needs at least 4 images per set" in one_error_line(status, err)
    status, _, err = run_cli("evaluate", "--real", sets_2d / "real", "--fake", lonely, "--out", tmp_path / "o",
                             "--metrics", "prdc,fd,intensity")  # fmt: skip
    line = one_error_line(status, err)
    assert "prdc needs at least 6 images per set (fd 2); the fake set has 1; these fit: --metrics intensity" in line


def test_extractor_file_with_a_wrong_hash_is_refused(sets_2d, tmp_path, run_cli):
    weights = tmp_path / "net.pt"
    torch.save({"w": torch.zeros(2)}, weights)
    wrong = hashlib.sha256(b"something else").hexdigest()
    status, _, err = run_cli(
        "evaluate",
        "--real",
        sets_2d / "real",
        "--fake",
        sets_2d / "fake",
        "--out",
        tmp_path / "o",
        "--extractor-file",
        weights,
        "--extractor-sha256",
        wrong,
        "--extractor-arch",
        "random_cnn",
    )
    line = one_error_line(status, err)
    assert f"net.pt: SHA-256 is {hashlib.sha256(weights.read_bytes()).hexdigest()}, not the expected {wrong}" in line


def test_mismatched_pairs_are_one_line(tmp_path, run_cli):
    a = PHANTOMS.build("ct_body", spatial_dims=2, seed=0, shape=(64, 64))
    b = PHANTOMS.build("ct_body", spatial_dims=2, seed=0, shape=(64, 48))
    write_image(a, tmp_path / "a.nii.gz")
    write_image(b, tmp_path / "b.nii.gz")
    (tmp_path / "pairs.csv").write_text("reference,test\na.nii.gz,a.nii.gz\na.nii.gz,b.nii.gz\n")
    status, _, err = run_cli(
        "evaluate", "--pairs", tmp_path / "pairs.csv", "--out", tmp_path / "o", "--data-range", 4095
    )
    assert "pairs.csv: line 3: reference a.nii.gz is 64x64 but test b.nii.gz is 64x48" in one_error_line(status, err)
    (tmp_path / "bad.csv").write_text("ref,test\na.nii.gz,a.nii.gz\n")
    status, _, err = run_cli("evaluate", "--pairs", tmp_path / "bad.csv", "--out", tmp_path / "o")
    assert "needs the header columns reference and test (found: ref, test)" in one_error_line(status, err)
    (tmp_path / "gone.csv").write_text("reference,test\na.nii.gz,missing.nii.gz\n")
    status, _, err = run_cli("evaluate", "--pairs", tmp_path / "gone.csv", "--out", tmp_path / "o")
    assert "line 2: test missing.nii.gz does not exist" in one_error_line(status, err)


def test_usage_mistakes_are_one_line(sets_2d, tmp_path, run_cli):
    base = ["evaluate", "--real", sets_2d / "real", "--fake", sets_2d / "fake", "--extractor", "random_cnn"]
    status, _, err = run_cli(*base, "--out", tmp_path / "o", "--metrics", "fid")
    assert "unknown set metric 'fid'; did you mean 'fd'?" in one_error_line(status, err)
    status, _, err = run_cli(*base, "--out", tmp_path / "o", "--metrics", "memorization")
    assert "needs the training set (--train DIR)" in one_error_line(status, err)
    status, _, err = run_cli(*base, "--out", tmp_path / "o", "--extractor-option", "sead=1")
    assert "unknown option(s) sead for the random_cnn extractor (valid: seed, input_size)" in one_error_line(
        status, err
    )
    status, _, err = run_cli(*base, "--out", tmp_path / "o", "--window", "400")
    assert "expected LOW,HIGH" in one_error_line(status, err)
    status, _, err = run_cli(*base, "--out", tmp_path / "o", "--extractor", "auto,random_cnn")
    assert "auto already means every installed extractor" in one_error_line(status, err)
    status, _, err = run_cli(*base, "--out", tmp_path / "o", "--extractor", "random_cnn,effnet")
    assert "unknown feature extractor 'effnet'" in one_error_line(status, err)
    status, _, err = run_cli(*base, "--out", tmp_path / "o", "--real-b", sets_2d / "real", "--metrics", "diversity")
    assert "--real-b serves the real-vs-real floors of fd, intensity, kid, prdc" in one_error_line(status, err)
    (tmp_path / "exists").mkdir()
    status, _, err = run_cli(*base, "--out", tmp_path / "exists", "--metrics", "intensity", "--no-progress")
    assert "already exists; pass --overwrite" in one_error_line(status, err)
    status, _, err = run_cli("evaluate", "--real", sets_2d / "real", "--out", tmp_path / "o")
    assert "give --real and --fake" in one_error_line(status, err)
    pairs = ["evaluate", "--pairs", tmp_path / "pairs.csv", "--out", tmp_path / "o"]
    status, _, err = run_cli(*pairs, "--mode", "2.5d", "--seed", "3")
    assert "--mode, --seed apply to --real/--fake sets, not to --pairs" in one_error_line(status, err)
    status, _, err = run_cli(*pairs, "--window=-160,240", "--data-range", "4095")
    assert "--data-range 4095 disagrees with --window (which is 400 wide" in one_error_line(status, err)


def test_thin_volumes_skip_default_diversity_but_refuse_it_when_asked(tmp_path, run_cli):
    real = write_set(tmp_path / "real", range(3), spatial_dims=3, shape=(24, 24, 8))
    fake = write_set(tmp_path / "fake", range(10, 13), spatial_dims=3, shape=(24, 24, 8))
    base = ["evaluate", "--real", real, "--fake", fake, "--nearest-k", 2, "--kid-subsets", 2, "--no-progress",
            "--extractor", "random_cnn"]  # fmt: skip
    status, _, err = run_cli(*base, "--out", tmp_path / "default")
    assert status == 0, err
    assert "diversity not computed: MS-SSIM diversity needs images of at least 11 voxels a side" in err
    record = json.loads((tmp_path / "default" / "metrics.json").read_text())
    assert "diversity" not in record["metrics_computed"] and "fd_random_cnn" in record["metrics"]
    status, _, err = run_cli(*base, "--out", tmp_path / "asked", "--metrics", "fd,diversity")
    assert "the real images are 24x24x8" in one_error_line(status, err)
    assert not (tmp_path / "asked").exists()


def test_sets_of_different_sizes_are_warned_about_even_when_one_set_mixes_sizes(tmp_path):
    write_set(tmp_path / "real", range(3), shape=(64, 64))
    write_set(tmp_path / "fake", range(10, 12), shape=(64, 64))
    write_set(tmp_path / "fake", range(20, 23), shape=(80, 72))
    record = evaluate_sets(tmp_path / "real", tmp_path / "fake", tmp_path / "r", metrics=["intensity"], progress=False)
    assert any(
        "real images are 64x64 but fake images are 80x72 (3), 64x64 (2): all are resized" in w
        for w in record["warnings"]
    )
