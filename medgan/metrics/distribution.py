"""Distribution metrics between a real and a generated set.

    from medgan.metrics.distribution import frechet_distance, kid, prdc
    fd = frechet_distance(real_features, fake_features)          # [N, D] and [M, D]
    kid_mean, kid_std = kid(real_features, fake_features, seed=0)
    scores = prdc(real_features, fake_features, nearest_k=5)      # precision, recall, density, coverage

Feature vectors come from an extractor in `medgan.metrics.features`; the numbers mean nothing
without its name, so callers report them as `fd_<extractor>` and so on. Everything is computed
in float64 on the features' device (numpy input stays on the CPU).

* Fréchet distance (Heusel et al. 2017): |mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r S_f)^1/2). The
  trace of the matrix square root is the sum of the square roots of the eigenvalues of the
  symmetric matrix L^T S_f L, where S_r = L L^T (a Cholesky factor, or V diag(sqrt w) from an
  eigendecomposition when S_r is singular): no non-symmetric sqrtm, no complex round-off. With
  fewer samples than dimensions it is the nuclear norm of B A^T (S_r = A^T A, S_f = B^T B).
* KID (Bińkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / D + 1)^3, averaged over random subsets, with its standard deviation.
* Precision and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020),
  on k-nearest-neighbour balls: a sample lies in the ball of x if its distance to x is at most
  the distance from x to x's k-th nearest neighbour in x's own set.
* Intensity distance: the 1-D Wasserstein distance between the voxel-value distributions, in
  the images' units (HU for CT).
"""

from __future__ import annotations

import numpy as np
import torch

from medgan.errors import ConfigError, InputError
from medgan.metrics.image import max_ms_ssim_scales, ms_ssim, ms_ssim_weights

__all__ = [
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_statistics",
    "kid",
    "mmd2_unbiased",
    "ms_ssim_diversity",
    "prdc",
    "wasserstein_1d",
]

_CHUNK_ROWS = 2048  # rows of a distance matrix held at once: 2048 x 10,000 float64 is 160 MB


def _features(x, what: str, min_samples: int = 1) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x.detach()
    if t.ndim != 2:
        raise InputError(f"{what} features must be a 2-D array [samples, dims]; got shape {tuple(t.shape)}")
    if t.shape[0] < min_samples:
        raise InputError(f"{what} set has {t.shape[0]} sample(s); this metric needs at least {min_samples}")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise InputError(f"{what} features contain NaN or infinite values")
    return t


def _pair(real, fake, min_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    r, f = _features(real, "real", min_samples), _features(fake, "fake", min_samples)
    if r.shape[1] != f.shape[1]:
        raise InputError(f"real and fake features differ in length: {r.shape[1]} vs {f.shape[1]}")
    return r, f.to(r.device)


def feature_statistics(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D] (N >= 2), float64."""
    x = _features(features, "the", min_samples=2)
    mean = x.mean(dim=0)
    centred = x - mean
    return mean, centred.T @ centred / (x.shape[0] - 1)


def _sqrt_factor(cov: torch.Tensor) -> torch.Tensor | None:
    """F with F F^T = cov: Cholesky when cov is positive definite, else None."""
    factor, info = torch.linalg.cholesky_ex(cov)
    return factor if int(info) == 0 else None


def _trace_sqrt_product(cov_a: torch.Tensor, cov_b: torch.Tensor) -> float:
    """tr((A B)^1/2) for symmetric positive semi-definite A and B.

    With A = F F^T, A B is similar to F^T B F (symmetric PSD), so the trace is the sum of the square
    roots of that matrix's eigenvalues. Negative round-off eigenvalues are clipped to zero.
    """
    factor = _sqrt_factor(cov_a)
    if factor is None:  # tr((A B)^1/2) = tr((B A)^1/2): try factoring B instead
        cov_a, cov_b = cov_b, cov_a
        factor = _sqrt_factor(cov_a)
    if factor is None:  # both singular (fewer samples than dims): fall back on an eigendecomposition
        values, vectors = torch.linalg.eigh(cov_a)
        factor = vectors * values.clamp(min=0).sqrt()
    eigenvalues = torch.linalg.eigvalsh(factor.T @ cov_b @ factor)
    return float(eigenvalues.clamp(min=0).sqrt().sum())


def frechet_distance_from_statistics(mean_a, cov_a, mean_b, cov_b) -> float:
    """Fréchet distance between the Gaussians N(mean_a, cov_a) and N(mean_b, cov_b)."""
    mean_a, mean_b = torch.as_tensor(mean_a, dtype=torch.float64), torch.as_tensor(mean_b, dtype=torch.float64)
    cov_a, cov_b = torch.as_tensor(cov_a, dtype=torch.float64), torch.as_tensor(cov_b, dtype=torch.float64)
    if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (*mean_a.shape, *mean_a.shape):
        raise InputError(
            f"statistics do not match: means {tuple(mean_a.shape)} and {tuple(mean_b.shape)}, "
            f"covariances {tuple(cov_a.shape)} and {tuple(cov_b.shape)}"
        )
    mean_term = float(((mean_a - mean_b) ** 2).sum())
    trace_term = float(torch.trace(cov_a) + torch.trace(cov_b)) - 2.0 * _trace_sqrt_product(cov_a, cov_b.to(cov_a))
    return mean_term + trace_term


def frechet_distance(real, fake) -> float:
    """Fréchet distance between Gaussians fitted to real [N, D] and fake [M, D] features.

    Needs at least 2 samples per set (a covariance). With fewer samples than dimensions the
    covariances are singular and FD is biased upward; compare FDs only at equal sample sizes.
    """
    r, f = _pair(real, fake)
    for what, x in (("real", r), ("fake", f)):
        if x.shape[0] < 2:
            raise InputError(
                f"Fréchet distance needs at least 2 samples per set to estimate a covariance; the {what} set has "
                f"{x.shape[0]}"
            )
    if max(r.shape[0], f.shape[0]) <= r.shape[1]:
        # Few samples: with S_r = A^T A and S_f = B^T B (centred rows / sqrt(n - 1)),
        # tr((S_r S_f)^1/2) is the sum of the singular values of B A^T, an n_f x n_r matrix.
        a = (r - r.mean(dim=0)) / (r.shape[0] - 1) ** 0.5
        b = (f - f.mean(dim=0)) / (f.shape[0] - 1) ** 0.5
        mean_term = float(((r.mean(dim=0) - f.mean(dim=0)) ** 2).sum())
        trace_sqrt = float(torch.linalg.svdvals(b @ a.T).sum())
        return mean_term + float((a * a).sum() + (b * b).sum()) - 2.0 * trace_sqrt
    mean_r, cov_r = feature_statistics(r)
    mean_f, cov_f = feature_statistics(f)
    return frechet_distance_from_statistics(mean_r, cov_r, mean_f, cov_f)


def _polynomial_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _mmd2_from_kernels(k_rr: torch.Tensor, k_ff: torch.Tensor, k_rf: torch.Tensor) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3): diagonals of the within-set kernels left out."""
    m, n = k_rr.shape[0], k_ff.shape[0]
    within_r = (k_rr.sum() - k_rr.diagonal().sum()) / (m * (m - 1))
    within_f = (k_ff.sum() - k_ff.diagonal().sum()) / (n * (n - 1))
    return float(within_r + within_f - 2.0 * k_rf.mean())


def mmd2_unbiased(real, fake) -> float:
    """Unbiased MMD^2 between two whole sets with KID's kernel (x.y / D + 1)^3."""
    r, f = _pair(real, fake, min_samples=2)
    return _mmd2_from_kernels(_polynomial_kernel(r, r), _polynomial_kernel(f, f), _polynomial_kernel(r, f))


def kid_subsets(n_real: int, n_fake: int, subset_size: int, n_subsets: int, seed: int):
    """The (real indices, fake indices) of each KID subset: drawn without replacement, per subset."""
    rng = np.random.default_rng(seed)
    for _ in range(n_subsets):
        yield rng.choice(n_real, subset_size, replace=False), rng.choice(n_fake, subset_size, replace=False)


def kid(
    real,
    fake,
    subset_size: int = 1000,  # samples per set in each subset (clipped to the smaller set)
    n_subsets: int = 100,  # subsets averaged
    seed: int = 0,  # subset draws
) -> tuple[float, float]:
    """Kernel (Inception) distance: mean and standard deviation of the unbiased MMD^2 over subsets."""
    r, f = _pair(real, fake, min_samples=2)
    if n_subsets < 1 or subset_size < 2:
        raise ConfigError(f"KID needs n_subsets >= 1 and subset_size >= 2; got {n_subsets} and {subset_size}")
    size = min(subset_size, r.shape[0], f.shape[0])
    if size == r.shape[0] == f.shape[0]:  # every subset is both whole sets: one value, no spread (not 1e-17)
        n_subsets = 1
    subsets = list(kid_subsets(r.shape[0], f.shape[0], size, n_subsets, seed))
    if r.shape[0] * f.shape[0] <= 4096**2:
        values = _kid_from_whole_kernels(r, f, subsets, size)
    else:  # large sets: the kernels of each subset only
        values = []
        for ri, fi in subsets:
            a, b = r[torch.as_tensor(ri, device=r.device)], f[torch.as_tensor(fi, device=r.device)]
            values.append(
                _mmd2_from_kernels(_polynomial_kernel(a, a), _polynomial_kernel(b, b), _polynomial_kernel(a, b))
            )
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), spread


def _kid_from_whole_kernels(r: torch.Tensor, f: torch.Tensor, subsets: list, m: int) -> list[float]:
    """Every subset's unbiased MMD^2 from the full kernel matrices, all subsets at once: with v_s the 0/1
    indicator of subset s, the sum of K over the subset's pairs is v_s^T K v_s."""
    k_rr, k_ff, k_rf = _polynomial_kernel(r, r), _polynomial_kernel(f, f), _polynomial_kernel(r, f)
    v_r = torch.zeros(len(subsets), r.shape[0], dtype=r.dtype, device=r.device)
    v_f = torch.zeros(len(subsets), f.shape[0], dtype=r.dtype, device=r.device)
    for row, (ri, fi) in enumerate(subsets):
        v_r[row, torch.as_tensor(ri, device=r.device)] = 1.0
        v_f[row, torch.as_tensor(fi, device=r.device)] = 1.0
    within_r = ((v_r @ k_rr) * v_r).sum(dim=1) - v_r @ k_rr.diagonal()
    within_f = ((v_f @ k_ff) * v_f).sum(dim=1) - v_f @ k_ff.diagonal()
    cross = ((v_r @ k_rf) * v_f).sum(dim=1)
    return (within_r / (m * (m - 1)) + within_f / (m * (m - 1)) - 2.0 * cross / (m * m)).tolist()


def kth_neighbour_distances(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row."""
    radii = []
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        d = torch.cdist(x[start : start + _CHUNK_ROWS], x)
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # index 0 is the row itself
    return torch.cat(radii)


def prdc(real, fake, nearest_k: int = 5) -> dict[str, float]:
    """Precision, recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020).

    precision: fraction of fake samples inside some real sample's k-NN ball (fidelity).
    recall:    fraction of real samples inside some fake sample's k-NN ball (diversity).
    density:   mean number of real balls holding each fake sample, divided by k (about 1 when
               the distributions match; above 1 when fakes crowd dense real regions).
    coverage:  fraction of real samples whose ball holds at least one fake sample.
    """
    r, f = _pair(real, fake)
    if nearest_k < 1:
        raise ConfigError(f"nearest_k must be at least 1; got {nearest_k}")
    for what, x in (("real", r), ("fake", f)):
        if x.shape[0] < nearest_k + 1:
            raise InputError(
                f"precision/recall with k={nearest_k} needs at least {nearest_k + 1} samples per set; "
                f"the {what} set has {x.shape[0]}"
            )
    radius_r, radius_f = kth_neighbour_distances(r, nearest_k), kth_neighbour_distances(f, nearest_k)
    fake_in_real = torch.zeros(f.shape[0], dtype=torch.bool, device=r.device)
    balls_per_fake = torch.zeros(f.shape[0], dtype=torch.float64, device=r.device)
    real_in_fake, real_covered = [], []
    for start in range(0, r.shape[0], _CHUNK_ROWS):
        d = torch.cdist(r[start : start + _CHUNK_ROWS], f)  # [real chunk, fake]
        inside_real_ball = d <= radius_r[start : start + _CHUNK_ROWS, None]
        fake_in_real |= inside_real_ball.any(dim=0)
        balls_per_fake += inside_real_ball.sum(dim=0)
        real_covered.append(inside_real_ball.any(dim=1))
        real_in_fake.append((d <= radius_f[None, :]).any(dim=1))
    return {
        "precision": float(fake_in_real.double().mean()),
        "recall": float(torch.cat(real_in_fake).double().mean()),
        "density": float(balls_per_fake.sum() / (nearest_k * f.shape[0])),
        "coverage": float(torch.cat(real_covered).double().mean()),
    }


def wasserstein_1d(values_a, values_b) -> float:
    """Exact 1-D Wasserstein-1 (earth mover's) distance between two samples, in their units."""
    a = np.sort(np.asarray(values_a, dtype=np.float64).ravel())
    b = np.sort(np.asarray(values_b, dtype=np.float64).ravel())
    if a.size == 0 or b.size == 0:
        raise InputError("the intensity distance needs values in both sets")
    both = np.sort(np.concatenate([a, b]))
    widths = np.diff(both)
    cdf_a = np.searchsorted(a, both[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, both[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * widths))  # integral of |F_a - F_b|


def ms_ssim_diversity(
    images,
    data_range: float,  # width of the images' intensity range (1.0 for images normalised to [0, 1])
    n_pairs: int = 100,  # random pairs of distinct samples scored
    seed: int = 0,
) -> dict[str, float]:
    """Mean MS-SSIM between random pairs of distinct images of one set: lower means more diverse.

    images: [N, *spatial] (all one shape). Uses as many scales (at most 5) as the size allows;
    compare a fake set's value with the real set's, computed alike.
    """
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.shape[0] < 2:
        raise InputError(f"MS-SSIM diversity needs at least 2 images; got {x.shape[0]}")
    spatial = tuple(x.shape[1:])
    scales = max_ms_ssim_scales(spatial)
    if scales < 1 or len(spatial) not in (2, 3):
        raise InputError(f"MS-SSIM diversity needs 2D or 3D images of at least 11 voxels a side; got {spatial}")
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    # Pairs of distinct images drawn with replacement: cheap for any n, and a repeated pair only
    # re-weights the mean slightly.
    first = rng.integers(0, n, n_pairs)
    second = rng.integers(0, n - 1, n_pairs)
    second = second + (second >= first)
    scores = []
    for start in range(0, n_pairs, 32):
        a, b = x[first[start : start + 32]], x[second[start : start + 32]]
        scores.append(ms_ssim(a, b, data_range, spatial_dims=len(spatial), weights=ms_ssim_weights(scales)))
    values = torch.cat(scores)
    std = float(values.std()) if n_pairs > 1 else 0.0
    return {"mean": float(values.mean()), "std": std, "pairs": int(n_pairs), "scales": scales}
