"""Real-vs-real floors: what a distribution metric gives between two real sets, at the sample sizes of
the generated comparison, so every number is read beside the value real data itself reaches.

    plan = plan_floor(n_real=100, n_fake=500, n_other=80, reference="train", seed=0)
    floor = frechet_distance(real[plan.real_rows], train[plan.other_rows])
    generated = frechet_distance(real[plan.real_rows], fake[plan.fake_rows])
    entry = floor_entry(generated, floor, better="lower")      # {"generated", "floor", "ratio", ...}

A finite sample never scores like its own distribution: FD is biased upward roughly as 1/N (Chong and
Forsyth 2020), precision and recall of two real samples stay below 1, KID's spread grows as N shrinks.
So the floor and the generated value use the same reference rows and the same number of compared
rows, the larger set subsampled without replacement from the run's seed, and their ratio compares like
with like. KID is unbiased and stays the number to lead with when sets are small.

The second real set, in order of preference:

* ``real_b``: a second real set given for this purpose (other patients than `--real`);
* ``train``: the training images; the floor is then held-out real against training real, the
  variation between two splits of the real data;
* ``split_half``: without either, the real set in two random halves; half A is the reference for both
  the floor and the generated value, half B the other real set. Slices of one patient falling in both
  halves make this floor optimistic (too low).

`extractor separation` is always the split-half form with the Fréchet distance: FD(real half A,
generated) / FD(real half A, real half B). An extractor that ranks the generated set far beyond the
gap between two real halves sees what separates them; one that gives a ratio near 1 does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medgan.metrics.distribution import frechet_distance

__all__ = ["REFERENCES", "FloorPlan", "floor_entry", "plan_floor", "rows_of", "separation", "split_halves", "subsample"]

REFERENCES = {
    "real_b": "the second real set (--real-b) against the real set",
    "train": "the training set against the held-out real set",
    "split_half": "two random halves of the real set",
}


@dataclass(frozen=True)
class FloorPlan:
    """Which rows of each set a floor and its matched generated value are computed from."""

    reference: str  # a key of REFERENCES
    real_rows: np.ndarray  # rows of the real set both comparisons start from (all of it, or half A)
    other_rows: np.ndarray  # rows of the second real set (real_b, train, or the real set's half B)
    fake_rows: np.ndarray  # rows of the generated set, as many as other_rows

    @property
    def compared(self) -> int:
        """Samples on the compared side of both comparisons (generated and second real)."""
        return len(self.other_rows)

    def record(self, n_fake: int) -> dict:
        """What metrics.json says about the floor: its reference and the sample sizes."""
        return {
            "reference": self.reference,
            "description": REFERENCES[self.reference],
            "real_samples": len(self.real_rows),
            "compared_samples": self.compared,
            "generated_subsampled": self.compared < n_fake,
        }


def split_halves(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves of range(count), each sorted; the first has the odd one out."""
    order = np.random.default_rng(seed).permutation(count)
    cut = (count + 1) // 2
    return np.sort(order[:cut]), np.sort(order[cut:])


def subsample(count: int, n: int, seed: int) -> np.ndarray:
    """n of range(count) without replacement, sorted; all of them, in order, when n >= count."""
    if n >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, n, replace=False))


def plan_floor(n_real: int, n_fake: int, n_other: int | None, reference: str, seed: int) -> FloorPlan:
    """The rows of a floor at the generated comparison's sample sizes.

    With a second real set (`n_other` images): the whole real set against n = min(n_fake, n_other)
    images of each of the other two sets. Split-half (`n_other` None): real half A against
    n = min(|B|, n_fake) images of half B and of the generated set.
    """
    if reference not in REFERENCES:
        raise ValueError(f"unknown floor reference {reference!r}")
    if reference == "split_half":
        real_rows, half_b = split_halves(n_real, seed)
        n = min(len(half_b), n_fake)
        other_rows = half_b[subsample(len(half_b), n, seed + 1)]
    else:
        real_rows = np.arange(n_real)
        n = min(int(n_other), n_fake)
        other_rows = subsample(int(n_other), n, seed + 1)
    return FloorPlan(reference, real_rows, other_rows, subsample(n_fake, n, seed + 2))


def floor_entry(generated: float, floor: float, better: str, noise: float = 0.0, **extra) -> dict:
    """The generated value beside its floor, with generated / floor.

    better: "lower" (FD, KID, intensity distance: a ratio above 1 is worse than real) or "higher"
    (precision, recall, coverage: below 1 is worse) or "one" (density: about 1 for matching sets).
    noise: the floor's own spread (KID's std over subsets): a floor within it of zero gives no ratio (None),
    since dividing by noise means nothing; an unbiased estimate below zero counts as zero in the ratio.
    """
    ratio = max(float(generated), 0.0) / floor if floor > max(noise, 0.0) else None
    return {"generated": float(generated), "floor": float(floor), "ratio": ratio, "better": better, **extra}


def rows_of(x, rows: np.ndarray):
    """Rows of features held as numpy or as a torch tensor (on the GPU in CUDA runs)."""
    if isinstance(x, torch.Tensor):
        return x[torch.as_tensor(rows, device=x.device)]
    return x[rows]


def separation(real, fake, seed: int = 0, plan: FloorPlan | None = None) -> dict:
    """How far beyond the gap between two real halves an extractor puts the generated set:
    FD(real half A, generated) / FD(real half A, real half B), both at the same sizes (`plan_floor`'s
    split-half plan from `seed`, unless a split-half `plan` is given). Needs 4 real and 2 generated samples."""
    if plan is None:
        plan = plan_floor(len(real), len(fake), None, "split_half", seed)
    ref = rows_of(real, plan.real_rows)
    halves = frechet_distance(ref, rows_of(real, plan.other_rows))
    generated = frechet_distance(ref, rows_of(fake, plan.fake_rows))
    return {
        "real_halves_fd": halves,
        "real_generated_fd": generated,
        "ratio": generated / halves if halves > 0 else None,
        "samples": [len(plan.real_rows), plan.compared],
    }
