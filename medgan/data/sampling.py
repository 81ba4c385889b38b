"""The order of training samples: every batch derived from (seed, step), so a resumed run sees exactly
the batches it would have seen, and every process of a multi-GPU run its own share of each epoch.

A sample is addressed by `(index, sample_seed)`: the dataset draws its random choices (a crop
position) from that seed alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import DistributedSampler, Sampler

from medgan.errors import ConfigError

__all__ = ["StepBatchSampler", "sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's random choices (crop position) in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class StepBatchSampler(Sampler):
    """Batches for steps `start_step`, `start_step + 1`, ... of an endless shuffled stream.

    The stream is this rank's share of each epoch (`DistributedSampler`: the same seeded
    permutation on every rank, cut into disjoint shards), epoch after epoch; a step's batch
    depends only on (seed, step), which is what makes resuming exact. Each item is
    `(index, sample_seed)`.
    """

    def __init__(self, dataset_size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_step: int = 0):  # fmt: skip
        if dataset_size < world_size:
            raise ConfigError(f"{dataset_size} training samples cannot be shared among {world_size} processes")
        self.sampler = DistributedSampler(
            range(dataset_size), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batch_size, self.seed, self.start_step = batch_size, seed, start_step
        self._epoch, self._order = -1, []

    def _epoch_order(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._order = epoch, list(self.sampler)
        return self._order

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = len(self.sampler)
        step = self.start_step
        while True:
            batch = []
            for position in range(step * self.batch_size, (step + 1) * self.batch_size):
                epoch, offset = divmod(position, per_epoch)
                index = self._epoch_order(epoch)[offset]
                batch.append((index, sample_seed(self.seed, epoch, index)))
            yield batch
            step += 1
