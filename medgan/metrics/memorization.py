"""Memorization: does a generator hand back (near-)copies of its training images?

    from medgan.metrics.memorization import memorization
    result = memorization(fake_feat, train_feat, heldout_feat, fake_pix, train_pix, heldout_pix)
    result.summary()["fraction_flagged"]

For every generated sample we find its nearest training sample twice: in feature space
(Euclidean distance between extractor features) and in pixel space (the highest normalised
cross-correlation, NCC, between images; distance = 1 - NCC). A real image the generator never
saw (held-out) is the yardstick: its own distances to the training set say how close an honest,
new image of this anatomy comes to some training image.

* distance ratio = a fake's nearest-training distance / the median held-out one, in each space.
  Ratios well below 1 mean the fake is closer to the training set than real new images are.
* a fake is flagged as a near-copy when, in both spaces, its distance is at most
  `threshold_factor` times the `reference_quantile` quantile of the held-out distances (default:
  half the 1st percentile), so a held-out real image is essentially never flagged while an exact
  or lightly altered copy always is.

Pitfalls: held-out images must come from patients absent from training (adjacent slices of one
patient are near-copies of each other); pixel NCC is not shift-invariant, so a shifted copy is
caught in feature space only if the extractor is shift-tolerant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from medgan.errors import ConfigError, InputError

__all__ = ["MemorizationResult", "memorization", "nearest_by_correlation", "nearest_by_distance", "unit_vectors"]

_CHUNK_ROWS = 1024


def unit_vectors(images) -> np.ndarray:
    """Images [N, ...] -> [N, P] float32 rows with zero mean and unit norm (so a dot product is the NCC).
    A constant image becomes a zero row (NCC 0 with everything)."""
    x = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0).astype(np.float32)


def nearest_by_correlation(query: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `query` (unit vectors), the highest NCC with a row of `reference` and its index."""
    q = torch.as_tensor(query, dtype=torch.float64)
    r = torch.as_tensor(reference, dtype=torch.float64, device=q.device)
    best, index = [], []
    for start in range(0, q.shape[0], _CHUNK_ROWS):
        values, where = (q[start : start + _CHUNK_ROWS] @ r.T).max(dim=1)
        best.append(values)
        index.append(where)
    return torch.cat(best).cpu().numpy(), torch.cat(index).cpu().numpy()


def nearest_by_distance(query: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `query`, the Euclidean distance to the nearest row of `reference` and its index."""
    q = torch.as_tensor(query, dtype=torch.float64)
    r = torch.as_tensor(reference, dtype=torch.float64, device=q.device)
    best, index = [], []
    for start in range(0, q.shape[0], _CHUNK_ROWS):
        values, where = torch.cdist(q[start : start + _CHUNK_ROWS], r).min(dim=1)
        best.append(values)
        index.append(where)
    return torch.cat(best).cpu().numpy(), torch.cat(index).cpu().numpy()


@dataclass
class MemorizationResult:
    """Per-sample nearest-training-sample distances and the near-copy flags (arrays over fakes)."""

    feature_distance: np.ndarray  # Euclidean, in feature units
    feature_match: np.ndarray  # index of the nearest training sample in feature space
    pixel_correlation: np.ndarray  # highest NCC with a training image
    pixel_match: np.ndarray  # index of that training image
    heldout_feature_distance: np.ndarray
    heldout_pixel_correlation: np.ndarray
    feature_threshold: float
    pixel_threshold: float  # on 1 - NCC
    flagged: np.ndarray
    warnings: list[str] = field(default_factory=list)

    @property
    def feature_ratio(self) -> np.ndarray:
        return self.feature_distance / _positive(np.median(self.heldout_feature_distance))

    @property
    def pixel_ratio(self) -> np.ndarray:
        return (1.0 - self.pixel_correlation) / _positive(np.median(1.0 - self.heldout_pixel_correlation))

    def suspicion_order(self) -> np.ndarray:
        """Fake indices, most suspicious first (smallest geometric mean of the two ratios)."""
        score = np.sqrt(np.clip(self.feature_ratio, 0, None) * np.clip(self.pixel_ratio, 0, None))
        return np.argsort(score, kind="stable")

    def summary(self) -> dict:
        quantiles = (0.05, 0.25, 0.5, 0.75, 0.95)

        def spread(values: np.ndarray) -> dict:
            return {f"q{int(q * 100):02d}": float(np.quantile(values, q)) for q in quantiles}

        return {
            "fraction_flagged": float(self.flagged.mean()),
            "flagged": int(self.flagged.sum()),
            "samples": len(self.flagged),
            "heldout_samples": len(self.heldout_feature_distance),
            "feature_threshold": self.feature_threshold,
            "pixel_threshold_one_minus_ncc": self.pixel_threshold,
            "feature_distance_ratio": spread(self.feature_ratio),
            "pixel_distance_ratio": spread(self.pixel_ratio),
            "fake_max_ncc": spread(self.pixel_correlation),
            "heldout_max_ncc": spread(self.heldout_pixel_correlation),
            "warnings": list(self.warnings),
        }


def _positive(value: float) -> float:
    return float(value) if value > 0 else float(np.finfo(np.float64).tiny)


def memorization(
    fake_features: np.ndarray,
    train_features: np.ndarray,
    heldout_features: np.ndarray,
    fake_pixels: np.ndarray,  # unit vectors (see unit_vectors), one row per image
    train_pixels: np.ndarray,
    heldout_pixels: np.ndarray,
    threshold_factor: float = 0.5,  # flag below this fraction of the held-out reference distance
    reference_quantile: float = 0.01,  # which quantile of held-out distances is the reference
    heldout_names: Sequence[str] | None = None,  # to name held-out images that are copies of training ones
    train_names: Sequence[str] | None = None,
) -> MemorizationResult:
    """Nearest training sample of every fake, in feature and pixel space, against held-out real images."""
    if not 0 < threshold_factor <= 1 or not 0 <= reference_quantile < 1:
        raise ConfigError("memorization needs 0 < threshold_factor <= 1 and 0 <= reference_quantile < 1")
    for what, features, pixels in (
        ("generated", fake_features, fake_pixels),
        ("training", train_features, train_pixels),
        ("held-out real", heldout_features, heldout_pixels),
    ):
        if len(features) < 1 or len(features) != len(pixels):
            raise InputError(f"memorization needs at least 1 {what} sample with both features and pixels")
    feature_distance, feature_match = nearest_by_distance(fake_features, train_features)
    pixel_correlation, pixel_match = nearest_by_correlation(fake_pixels, train_pixels)
    heldout_distance, _ = nearest_by_distance(heldout_features, train_features)
    heldout_correlation, heldout_match = nearest_by_correlation(heldout_pixels, train_pixels)
    feature_threshold = threshold_factor * float(np.quantile(heldout_distance, reference_quantile))
    pixel_threshold = threshold_factor * float(np.quantile(1.0 - heldout_correlation, reference_quantile))
    # Exact copies come out at ~1e-7 rather than 0 (float round-off); never let a zero threshold hide them.
    feature_threshold = max(feature_threshold, 1e-6 * float(np.median(heldout_distance)))
    pixel_threshold = max(pixel_threshold, 1e-6)
    flagged = (feature_distance <= feature_threshold) & (1.0 - pixel_correlation <= pixel_threshold)
    warnings = []
    if len(heldout_distance) < 20:
        warnings.append(f"only {len(heldout_distance)} held-out real samples: the near-copy thresholds are rough")
    copies = np.flatnonzero(heldout_correlation > 0.9999)
    if copies.size:
        named = ""
        if heldout_names is not None and train_names is not None:
            pairs = [f"{heldout_names[i]} = {train_names[int(heldout_match[i])]}" for i in copies[:3]]
            named = f" ({'; '.join(pairs)}{'; ...' if copies.size > 3 else ''})"
        warnings.append(
            f"{copies.size} held-out real image(s) have an exact copy in the training set{named}: the held-out set "
            "overlaps training, which hides memorization"
        )
    return MemorizationResult(
        feature_distance,
        feature_match,
        pixel_correlation,
        pixel_match,
        heldout_distance,
        heldout_correlation,
        feature_threshold,
        pixel_threshold,
        flagged,
        warnings,
    )
