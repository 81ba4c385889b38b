"""Distribution metrics against direct transcriptions of their papers (numpy/scipy, written here)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from scipy.spatial.distance import cdist

from medgan.errors import InputError
from medgan.metrics.distribution import (
    frechet_distance,
    kid,
    kid_subsets,
    mmd2_unbiased,
    ms_ssim_diversity,
    prdc,
    wasserstein_1d,
)

RTOL = 1e-4


def features(n, d, seed, shift=0.0, scale=1.0):
    mixing = np.random.default_rng(1234).normal(size=(d, d)) / np.sqrt(d)  # correlated dims, one distribution
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) @ mixing) * scale + shift


def fd_reference(a, b):
    """Heusel et al. 2017 with scipy's sqrtm, as pytorch-fid writes it."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize(
    ("n_real", "n_fake", "dims"),
    [(400, 300, 32), (300, 300, 128), (60, 500, 64), (40, 50, 64)],
    ids=["full-rank", "square", "one-singular", "both-singular"],
)
def test_frechet_distance_matches_scipy_sqrtm(n_real, n_fake, dims):
    real = features(n_real, dims, 0)
    fake = features(n_fake, dims, 1, shift=0.2, scale=1.3)
    assert frechet_distance(real, fake) == pytest.approx(fd_reference(real, fake), rel=RTOL)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_shift():
    real = features(500, 16, 0)
    assert abs(frechet_distance(real, real)) < 1e-8
    assert frechet_distance(real, real + 0.1) < frechet_distance(real, real + 0.5)


def test_frechet_distance_names_the_minimum_sample_count():
    with pytest.raises(InputError, match="needs at least 2 samples per set.*the fake set has 1"):
        frechet_distance(features(10, 4, 0), features(1, 4, 1))
    with pytest.raises(InputError, match="differ in length: 4 vs 5"):
        frechet_distance(features(10, 4, 0), features(10, 5, 1))
    with pytest.raises(InputError, match="NaN"):
        frechet_distance(np.full((10, 4), np.nan), features(10, 4, 1))


def mmd2_reference(x, y):
    """Bińkowski et al. 2018, eq. (4) with k(x, y) = (x.y / d + 1)^3, as explicit sums over i != j."""
    d = x.shape[1]
    m, n = len(x), len(y)

    def k(a, b):
        return (a @ b.T / d + 1) ** 3

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    off_x = kxx.sum() - np.trace(kxx)
    off_y = kyy.sum() - np.trace(kyy)
    return off_x / (m * (m - 1)) + off_y / (n * (n - 1)) - 2 * kxy.sum() / (m * n)


def test_kid_matches_the_unbiased_mmd_formula():
    real, fake = features(120, 24, 2), features(120, 24, 3, shift=0.3)
    expected = mmd2_reference(real, fake)
    assert mmd2_unbiased(real, fake) == pytest.approx(expected, rel=RTOL)
    # one subset as large as the sets is a permutation of them: the same unbiased estimate
    mean, std = kid(real, fake, subset_size=1000, n_subsets=1)
    assert mean == pytest.approx(expected, rel=RTOL) and std == 0.0
    # so many such subsets have no spread either: exactly 0, not rounding noise (a report said '± 2.8e-17')
    mean, std = kid(real, fake, subset_size=1000, n_subsets=100)
    assert mean == pytest.approx(expected, rel=RTOL) and std == 0.0


@pytest.mark.parametrize("sizes", [(150, 130), (5000, 40)], ids=["whole-kernels", "per-subset"])
def test_kid_subsets_mean_and_std(sizes):
    real, fake = features(sizes[0], 16, 4), features(sizes[1], 16, 5, shift=0.2)
    values = [mmd2_reference(real[ri], fake[fi]) for ri, fi in kid_subsets(len(real), len(fake), 30, 20, seed=9)]
    mean, std = kid(real, fake, subset_size=30, n_subsets=20, seed=9)
    assert mean == pytest.approx(np.mean(values), rel=RTOL)
    assert std == pytest.approx(np.std(values, ddof=1), rel=RTOL)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    same = kid(features(400, 16, 6), features(400, 16, 7), subset_size=200, n_subsets=20)[0]
    apart = kid(features(400, 16, 6), features(400, 16, 7, shift=0.5), subset_size=200, n_subsets=20)[0]
    assert abs(same) < 0.2 * apart


def prdc_reference(real, fake, k):
    """Kynkäänniemi et al. 2019 (precision, recall) and Naeem et al. 2020 (density, coverage)."""
    d_rr, d_ff, d_rf = cdist(real, real), cdist(fake, fake), cdist(real, fake)
    radius_r = np.sort(d_rr, axis=1)[:, k]  # column 0 is the sample itself
    radius_f = np.sort(d_ff, axis=1)[:, k]
    inside = d_rf <= radius_r[:, None]  # [real, fake]: fake j in the ball of real i
    return {
        "precision": inside.any(axis=0).mean(),
        "recall": (d_rf <= radius_f[None, :]).any(axis=1).mean(),
        "density": inside.sum() / (k * len(fake)),
        "coverage": inside.any(axis=1).mean(),
    }


@pytest.mark.parametrize("k", [3, 5])
def test_prdc_matches_the_papers(k):
    real = features(300, 16, 10)
    fake = features(250, 16, 11, shift=0.4, scale=0.8)
    got, expected = prdc(real, fake, nearest_k=k), prdc_reference(real, fake, k)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=RTOL), key
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1


def test_prdc_in_several_chunks_agrees(monkeypatch):
    import medgan.metrics.distribution as distribution

    real, fake = features(200, 8, 12), features(180, 8, 13, shift=0.3)
    whole = prdc(real, fake)
    monkeypatch.setattr(distribution, "_CHUNK_ROWS", 37)
    assert prdc(real, fake) == whole


def test_prdc_names_the_minimum():
    with pytest.raises(InputError, match="k=5 needs at least 6 samples per set; the real set has 4"):
        prdc(features(4, 3, 0), features(20, 3, 1))


def test_wasserstein_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(40, 10, 5000)
    b = np.concatenate([rng.normal(60, 12, 3000), rng.integers(-1000, -990, 700)])
    assert wasserstein_1d(a, b) == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=RTOL)
    assert wasserstein_1d(a, a + 25.0) == pytest.approx(25.0, rel=RTOL)


def test_ms_ssim_diversity_separates_copies_from_varied_images():
    rng = np.random.default_rng(0)
    base = rng.random((64, 64))
    copies = np.stack([base + rng.normal(0, 0.01, base.shape) for _ in range(6)])
    varied = rng.random((6, 64, 64))
    copies_score = ms_ssim_diversity(copies, data_range=1.0, n_pairs=20)
    varied_score = ms_ssim_diversity(varied, data_range=1.0, n_pairs=20)
    assert copies_score["mean"] > 0.9 > 0.2 > varied_score["mean"]
    assert copies_score["scales"] == 3 and copies_score["pairs"] == 20
