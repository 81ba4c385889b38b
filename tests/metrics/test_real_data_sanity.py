"""Sanity on a real scan: the Fréchet distance between two halves of one real set is much smaller
than between the real set and a degraded or a shuffled copy of it."""

from __future__ import annotations

import numpy as np
import pytest
from _metrics_data import has_efficientnet, head_ct_slices
from scipy.ndimage import gaussian_filter

from medgan.metrics.distribution import frechet_distance, kid, prdc
from medgan.metrics.features import EXTRACTORS, extract_features
from medgan.metrics.sets import Window


def _sets():
    volume = head_ct_slices()[18:90].astype(np.float32)  # 72 slices from skull base to vertex
    rng = np.random.default_rng(0)
    even, odd = volume[0::2], volume[1::2]  # interleaved halves: the same anatomy, sampled alike
    # a smoothing reconstruction kernel plus low-dose noise, and every slice's pixels shuffled
    degraded = np.stack([gaussian_filter(s, 2.0) + rng.normal(0, 50, s.shape) for s in odd]).astype(np.float32)
    shuffled = np.stack([rng.permutation(s.ravel()).reshape(s.shape) for s in odd])
    return even, {"half": odd, "degraded": degraded, "shuffled": shuffled}


# The ratios measured when this test was written: random_cnn 7.3 and 139, efficientnet_lite0 19.5 and 51.
@pytest.mark.parametrize(
    ("name", "degraded_factor", "shuffled_factor"),
    [("random_cnn", 3.0, 30.0), ("efficientnet_lite0", 8.0, 20.0)],
)
def test_fd_halves_much_smaller_than_degraded_or_shuffled(name, degraded_factor, shuffled_factor):
    if name == "efficientnet_lite0" and not has_efficientnet():
        pytest.skip("the features extra is not installed")
    even, others = _sets()
    window = Window(-1000.0, 1000.0, "CT default")
    extractor = EXTRACTORS.build(name)

    def features(x):
        return extract_features([window.apply(s) for s in x], extractor, batch_size=16)

    reference = features(even)
    other = {key: features(x) for key, x in others.items()}
    fd = {key: frechet_distance(reference, f) for key, f in other.items()}
    assert fd["degraded"] > degraded_factor * fd["half"]
    assert fd["shuffled"] > shuffled_factor * fd["half"]
    scores = prdc(reference, other["half"])
    assert scores["precision"] > 0.9 and scores["recall"] > 0.9
    assert abs(kid(reference, other["half"])[0]) < kid(reference, other["shuffled"])[0] / 10
