"""Real-vs-real floors: each distribution metric's floor is that metric between two real sets at the
generated comparison's sample sizes, checked against numpy/scipy transcriptions of the formulas on features
extracted here, apart from the evaluation's own pass over the images."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from _metrics_data import write_phantom_set
from scipy.spatial.distance import cdist

from medgan.errors import ConfigError
from medgan.io import read_image
from medgan.metrics.evaluate import evaluate_sets
from medgan.metrics.features import EXTRACTORS, extract_features
from medgan.metrics.floors import floor_entry, plan_floor, split_halves, subsample

RTOL = 1e-3  # features are float32, and FD from few samples in 512 dims subtracts large traces


def fd_reference(a, b):
    """Heusel et al. 2017 with scipy's sqrtm."""
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fd_low_rank(a, b):
    """The same distance from small matrices: with S_a = A^T A (A: centred rows / sqrt(n - 1)), the nonzero
    eigenvalues of S_a S_b are those of the n x n matrix A S_b A^T (cheap where sqrtm of 512 x 512 is not)."""
    ca = (a - a.mean(0)) / np.sqrt(len(a) - 1)
    s_b = np.cov(b, rowvar=False)
    small = np.linalg.eigvals(ca @ s_b @ ca.T).real
    trace_sqrt = np.sqrt(np.clip(small, 0, None)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + (ca**2).sum() + np.trace(s_b) - 2 * trace_sqrt)


def mmd2_reference(x, y):
    """Unbiased MMD^2 with KID's kernel (x.y / d + 1)^3, sums over i != j."""
    k = lambda a, b: (a @ b.T / x.shape[1] + 1) ** 3  # noqa: E731
    kxx, kyy = k(x, x), k(y, y)
    m, n = len(x), len(y)
    within = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return within - 2 * k(x, y).mean()


def prdc_reference(real, fake, k):
    """Kynkäänniemi et al. 2019 and Naeem et al. 2020, written with full distance matrices."""
    rr, ff, rf = cdist(real, real), cdist(fake, fake), cdist(real, fake)
    radius_r, radius_f = np.sort(rr, axis=1)[:, k], np.sort(ff, axis=1)[:, k]
    inside = rf <= radius_r[:, None]
    return {
        "precision": inside.any(axis=0).mean(),
        "recall": (rf <= radius_f[None, :]).any(axis=1).mean(),
        "density": inside.sum() / (k * len(fake)),
        "coverage": inside.any(axis=1).mean(),
    }


def hu_images(folder):
    return [read_image(str(p))[0].numpy() for p in sorted(folder.glob("*.nii.gz"))]


def features_of(images):
    """random_cnn features of CT images in the default window (-1000, 1000) HU, extracted here."""
    extractor = EXTRACTORS.build("random_cnn", spatial_dims=2)
    return extract_features([np.clip((x + 1000.0) / 2000.0, 0, 1) for x in images], extractor).astype(np.float64)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("floors")
    write_phantom_set(root / "real", range(0, 16))
    write_phantom_set(root / "fake", range(200, 210), transform=lambda x: x + 60.0)
    write_phantom_set(root / "train", range(300, 324))
    write_phantom_set(root / "real_b", range(400, 406))
    return root


def test_split_halves_and_subsamples_are_disjoint_seeded_and_sized():
    a, b = split_halves(17, seed=3)
    assert len(a) == 9 and len(b) == 8 and sorted(np.concatenate([a, b])) == list(range(17))
    assert np.array_equal(a, split_halves(17, seed=3)[0]) and not np.array_equal(a, split_halves(17, seed=4)[0])
    rows = subsample(30, 12, seed=0)
    assert len(set(rows)) == 12 and rows.max() < 30 and np.array_equal(subsample(5, 12, seed=0), np.arange(5))
    plan = plan_floor(n_real=17, n_fake=10, n_other=None, reference="split_half", seed=0)
    half_a, half_b = split_halves(17, 0)
    assert np.array_equal(plan.real_rows, half_a) and set(plan.other_rows) <= set(half_b)
    assert len(plan.other_rows) == len(plan.fake_rows) == 8  # both compared sides at one size
    plan = plan_floor(n_real=17, n_fake=10, n_other=24, reference="train", seed=0)
    assert len(plan.real_rows) == 17 and len(plan.other_rows) == len(plan.fake_rows) == 10
    assert np.array_equal(plan.fake_rows, np.arange(10))  # the smaller side is used whole
    plan = plan_floor(n_real=17, n_fake=10, n_other=6, reference="real_b", seed=0)
    assert len(plan.fake_rows) == 6 and len(set(plan.fake_rows)) == 6


def test_the_split_half_floor_is_each_metric_applied_to_two_real_halves(sets, tmp_path):
    record = evaluate_sets(
        sets / "real", sets / "fake", tmp_path / "r", metrics=["fd", "kid", "prdc", "intensity"],
        extractor="random_cnn", progress=False, seed=5,
    )  # fmt: skip
    metrics = record["metrics"]
    assert record["floor"] == {
        "reference": "split_half", "description": "two random halves of the real set", "real_samples": 8,
        "compared_samples": 8, "generated_subsampled": True,
    }  # fmt: skip
    real_hu, fake_hu = hu_images(sets / "real"), hu_images(sets / "fake")
    real, fake = features_of(real_hu), features_of(fake_hu)
    a, b = split_halves(16, seed=5)
    fake_rows = subsample(10, 8, seed=5 + 2)  # the documented draw: the run's seed + 2
    assert metrics["fd_random_cnn_floor"]["floor"] == pytest.approx(fd_reference(real[a], real[b]), rel=RTOL)
    assert metrics["fd_random_cnn_floor"]["generated"] == pytest.approx(fd_low_rank(real[a], fake[fake_rows]), rel=RTOL)
    fd = metrics["fd_random_cnn_floor"]
    assert fd["ratio"] == pytest.approx(fd["generated"] / fd["floor"]) and fd["better"] == "lower"
    assert fd["ratio"] > 1.5  # +60 HU everywhere is further than two real halves
    # KID: subsets of the whole (8 + 8 samples), so the value is the unbiased MMD^2 of the two halves
    kid = metrics["kid_random_cnn_floor"]
    assert kid["floor"] == pytest.approx(mmd2_reference(real[a], real[b]), rel=RTOL, abs=1e-9)
    assert kid["floor_std"] == 0.0 and kid["subset_size"] == 8
    expected = prdc_reference(real[a], real[b], k=5)
    for name in ("precision", "recall", "density", "coverage"):
        assert metrics[f"{name}_random_cnn_floor"]["floor"] == pytest.approx(expected[name]), name
    # the intensity floor: every voxel (small images) of half A against half B, in HU
    w1 = scipy.stats.wasserstein_distance(
        np.concatenate([real_hu[i].ravel() for i in a]), np.concatenate([real_hu[i].ravel() for i in b])
    )
    assert metrics["intensity_w1_floor"]["floor"] == pytest.approx(w1, rel=RTOL)
    # the separation is the same split-half FD ratio
    separation = record["extractor_separation"]["random_cnn"]
    assert separation["ratio"] == pytest.approx(fd["ratio"]) and separation["samples"] == [8, 8]


def test_the_training_set_is_the_floor_at_the_generated_sets_size_and_real_b_comes_first(sets, tmp_path):
    record = evaluate_sets(
        sets / "real", sets / "fake", tmp_path / "t", train=sets / "train", metrics=["fd", "memorization"],
        extractor="random_cnn", progress=False,
    )  # fmt: skip
    assert record["floor"]["reference"] == "train" and record["floor"]["compared_samples"] == 10
    assert record["floor"]["real_samples"] == 16 and not record["floor"]["generated_subsampled"]
    fd = record["metrics"]["fd_random_cnn_floor"]
    assert fd["generated"] == record["metrics"]["fd_random_cnn"]  # all of both sets: the value itself
    real, train = features_of(hu_images(sets / "real")), features_of(hu_images(sets / "train"))
    rows = subsample(24, 10, seed=0 + 1)
    assert fd["floor"] == pytest.approx(fd_low_rank(train[rows], real), rel=RTOL)
    record = evaluate_sets(
        sets / "real", sets / "fake", tmp_path / "b", train=sets / "train", real_b=sets / "real_b",
        metrics=["fd"], extractor="random_cnn", progress=False,
    )  # fmt: skip
    assert record["floor"]["reference"] == "real_b" and record["floor"]["compared_samples"] == 6
    assert record["floor"]["generated_subsampled"] and "train" not in record["inputs"]
    real_b = features_of(hu_images(sets / "real_b"))
    fd = record["metrics"]["fd_random_cnn_floor"]
    assert fd["floor"] == pytest.approx(fd_low_rank(real_b, real), rel=RTOL)
    fake = features_of(hu_images(sets / "fake"))
    assert fd["generated"] == pytest.approx(fd_low_rank(fake[subsample(10, 6, seed=2)], real), rel=RTOL)
    with pytest.raises(ConfigError, match="--real-b serves the real-vs-real floors"):
        evaluate_sets(sets / "real", sets / "fake", tmp_path / "d", real_b=sets / "real_b", metrics=["diversity"])


def test_a_floor_within_its_noise_gives_no_ratio():
    assert floor_entry(0.5, 0.1, "lower")["ratio"] == pytest.approx(5.0)
    assert floor_entry(0.5, 0.001, "lower", noise=0.002)["ratio"] is None  # KID floor indistinguishable from 0
    assert floor_entry(-0.001, 0.1, "lower", noise=0.01)["ratio"] == 0.0  # unbiased KID below zero: zero
    assert floor_entry(0.4, 0.8, "higher")["ratio"] == pytest.approx(0.5)
    assert floor_entry(1.0, 0.0, "lower")["ratio"] is None
