"""Ending a run early, with a checkpoint, and resuming it later (`medgan train --resume`).

A run stops at the step where its wall-clock budget is spent (`train.time_limit_minutes`) or a
scheduler asks it to (SIGTERM, or SIGUSR1 as SLURM's `--signal` sends ahead of a slot's end).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from medgan.training.distributed import Dist

__all__ = ["Stopper"]

clock = time.monotonic  # the wall clock train.time_limit_minutes reads (a test replaces it)


class Stopper:
    """When to end a run early, with a checkpoint: its wall-clock budget is spent (train.time_limit_minutes),
    or a scheduler asked it to stop (SIGTERM, or SIGUSR1 as SLURM's --signal sends ahead of the end of a slot).
    With several processes rank 0 decides at log steps, for all of them."""

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self, limit_minutes: float | None, dist: Dist) -> None:
        self.deadline = None if limit_minutes is None else clock() + 60.0 * limit_minutes
        self.dist, self.signal, self.reason = dist, None, None

    @contextlib.contextmanager
    def catching_signals(self) -> Iterator[None]:
        previous = {}
        if threading.current_thread() is threading.main_thread():  # Python handles signals there only
            for name in self.SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    previous[number] = signal.signal(number, self._caught)
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _caught(self, number: int, frame: Any) -> None:
        self.signal = signal.Signals(number).name

    def _why(self) -> str | None:
        if self.signal is not None:
            return self.signal
        if self.deadline is not None and clock() >= self.deadline:
            return "train.time_limit_minutes"
        return None

    def __call__(self, done: int, interval: int) -> bool:
        if self.dist.world_size == 1:
            self.reason = self._why()
        elif done % interval:  # the same steps on every rank: each must join the broadcast
            return False
        else:
            self.reason = self.dist.broadcast_object(self._why() if self.dist.is_main else None)
        return self.reason is not None
