"""Memorization: planted copies of training images are flagged with their match; held-out real images are not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _metrics_data import head_ct_slices

from medgan.errors import InputError
from medgan.metrics.extractor import resize
from medgan.metrics.features import EXTRACTORS, extract_features
from medgan.metrics.memorization import memorization, nearest_by_correlation, nearest_by_distance, unit_vectors
from medgan.metrics.sets import Window


def test_nearest_neighbours_match_brute_force():
    rng = np.random.default_rng(0)
    query, reference = rng.normal(size=(7, 50)), rng.normal(size=(11, 50))
    ncc, index = nearest_by_correlation(unit_vectors(query), unit_vectors(reference))
    brute = np.corrcoef(query, reference)[:7, 7:]
    np.testing.assert_array_equal(index, brute.argmax(axis=1))
    np.testing.assert_allclose(ncc, brute.max(axis=1), rtol=1e-5)
    distance, index = nearest_by_distance(query, reference)
    full = np.linalg.norm(query[:, None] - reference[None], axis=2)
    np.testing.assert_array_equal(index, full.argmin(axis=1))
    np.testing.assert_allclose(distance, full.min(axis=1), rtol=1e-10)
    assert not unit_vectors(np.ones((1, 5, 5))).any()  # a constant image correlates with nothing


def _pixels(window: Window, slices: np.ndarray) -> np.ndarray:
    small = [resize(torch.from_numpy(window.apply(s))[None, None], (64, 64))[0, 0].numpy() for s in slices]
    return unit_vectors(np.stack(small))


def test_planted_copies_of_real_ct_slices_are_flagged_and_held_out_slices_are_not():
    """One real head CT cut into blocks of slices: training, held-out reference and held-out probes.

    The probes stay two slices (3 mm) away from the training blocks: adjacent slices of one patient
    are near-copies by nature, which is why held-out data must come from other patients.
    """
    volume = head_ct_slices().astype(np.float32)
    train = volume[np.r_[0:36, 72:108]]
    reference, probes = volume[36:54], volume[54:70]
    rng = np.random.default_rng(0)
    exact = [3, 20, 40, 60]
    noisy = [5, 45, 65]  # copies with 10 HU of noise and a 2% gain change: still copies
    copies = [train[i] for i in exact] + [train[i] * 1.02 + rng.normal(0, 10, train[i].shape) for i in noisy]
    fake = np.stack([*copies, *probes]).astype(np.float32)
    window = Window(-1000, 1000, "test")
    extractor = EXTRACTORS.build("random_cnn")

    def features(x):
        return extract_features([window.apply(s) for s in x], extractor)

    result = memorization(
        features(fake),
        features(train),
        features(reference),
        _pixels(window, fake),
        _pixels(window, train),
        _pixels(window, reference),
    )
    n_copies = len(copies)
    assert result.flagged[:n_copies].all()
    assert not result.flagged[n_copies:].any()
    np.testing.assert_array_equal(result.pixel_match[:n_copies], exact + noisy)
    np.testing.assert_array_equal(result.feature_match[:n_copies], exact + noisy)
    summary = result.summary()
    assert summary["flagged"] == n_copies and summary["fraction_flagged"] == pytest.approx(n_copies / len(fake))
    assert result.feature_ratio[:n_copies].max() < 0.2 < result.feature_ratio[n_copies:].min()
    assert set(result.suspicion_order()[:n_copies]) == set(range(n_copies))


def test_held_out_overlapping_training_is_reported():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(30, 16))
    pixels = unit_vectors(rng.normal(size=(30, 64)))
    heldout_features, heldout_pixels = train[:25].copy(), pixels[:25].copy()  # a leak: held-out = training
    result = memorization(train[:3], train, heldout_features, pixels[:3], pixels, heldout_pixels)
    assert any("overlaps training" in w for w in result.warnings)
    order = rng.permutation(25)  # named by their own match, not by position
    result = memorization(train[:3], train, heldout_features[order], pixels[:3], pixels, heldout_pixels[order],
                          heldout_names=[f"h{i}" for i in order], train_names=[f"t{i}" for i in range(30)])  # fmt: skip
    (warning,) = [w for w in result.warnings if "overlaps training" in w]
    assert warning.startswith(f"25 held-out real image(s) have an exact copy in the training set (h{order[0]} = "
                              f"t{order[0]}; h{order[1]} = t{order[1]}; h{order[2]} = t{order[2]}; ...)")  # fmt: skip


def test_memorization_needs_every_set():
    with pytest.raises(InputError, match="at least 1 held-out real sample"):
        memorization(
            np.ones((2, 3)), np.ones((2, 3)), np.ones((0, 3)), np.ones((2, 4)), np.ones((2, 4)), np.ones((0, 4))
        )
