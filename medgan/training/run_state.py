"""A run's whole state, gathered into a checkpoint and put back from one: exact resume.

`RunState` holds references to everything that changes while a run trains: the networks, their
EMA, both optimizers and loss scalers, the augmentation (ADA's probability), the objective (its
noise generator, CycleGAN's pool) and, per process, the global random states. `capture(step)`
returns the checkpoint dict (`medgan.tasks.checkpoint` describes and writes it) and `restore`
loads one, refusing weights that do not fit these networks with one line. A run resumed from step
N continues bit for bit as if it had never stopped.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medgan.errors import ConfigError
from medgan.training.augment import Augment
from medgan.training.distributed import Dist
from medgan.training.ema import EMA
from medgan.training.objectives import Objective
from medgan.training.pairs import SimulatedPairs

__all__ = ["RunState", "get_rng_state", "set_rng_state"]

log = logging.getLogger(__name__)


@dataclass
class RunState:
    config: dict[str, Any]  # the resolved config, as stored
    record: dict[str, Any]  # the data record (window, spacing, modality: what outputs are written back with)
    nets: dict[str, nn.Module]
    ema: EMA
    optimizers: dict[str, torch.optim.Optimizer]  # "G" and "D"
    scalers: dict[str, Any]  # fp16 loss scalers, None entries otherwise
    augment: Augment
    objective: Objective
    dist: Dist
    simulate: SimulatedPairs | None = None  # data.degrade: its record generator is per process

    def capture(self, step: int, images_per_step: int) -> dict[str, Any]:
        """Everything a checkpoint holds at `step`; per-process random states are gathered from every rank."""
        mine = {
            "rng": get_rng_state(),
            "objective": self.objective.state_dict(),
            "augment": self.augment.state_dict(),
            "weights": _digest(self.nets),
        }
        if self.simulate is not None:
            mine["pairs"] = self.simulate.state_dict()
        per_rank = self.dist.gather_objects(mine)
        if len({str(r["weights"]) for r in per_rank}) > 1:
            log.warning("step %d: the processes' weights differ (%s); gradients are not being averaged alike",
                        step, [r["weights"] for r in per_rank])  # fmt: skip
        return {
            "config": self.config,
            "step": step,
            "images_seen": step * images_per_step,
            "world_size": self.dist.world_size,
            "networks": {name: net.state_dict() for name, net in self.nets.items()},
            "ema": self.ema.state_dict(),
            "optimizers": {key: opt.state_dict() for key, opt in self.optimizers.items()},
            "scalers": {key: s.state_dict() for key, s in self.scalers.items() if s is not None},
            "ranks": per_rank,
            "data_record": self.record,
        }

    def restore(self, checkpoint: dict[str, Any]) -> int:
        """Load a checkpoint's states; returns its step. A state that does not fit is a ConfigError."""
        for name, net in self.nets.items():
            mismatch = _first_mismatch(net.state_dict(), checkpoint["networks"].get(name, {}))
            if mismatch:
                raise ConfigError(f"the checkpoint does not fit these networks: {name}.{mismatch} (class and label "
                                  "counts come from the data: check data.source); resume with the run's own "
                                  "config.yaml and data")  # fmt: skip
        try:
            for name, net in self.nets.items():
                net.load_state_dict(checkpoint["networks"][name])
            self.ema.load_state_dict(checkpoint["ema"])
            for key, opt in self.optimizers.items():
                opt.load_state_dict(checkpoint["optimizers"][key])
            for key, scaler in self.scalers.items():
                if scaler is not None and key in checkpoint["scalers"]:
                    scaler.load_state_dict(checkpoint["scalers"][key])
        except (KeyError, RuntimeError, ValueError) as err:
            raise ConfigError(f"the checkpoint does not fit these networks ({str(err).splitlines()[0][:160]}); "
                              "resume with the run's own config.yaml") from None  # fmt: skip
        ranks = checkpoint["ranks"]
        if checkpoint.get("world_size") == self.dist.world_size:
            mine = ranks[self.dist.rank]
            set_rng_state(mine["rng"])
        else:  # another process count: the data order still continues; noise streams restart per rank
            log.warning("checkpoint from %s processes, resuming on %s: random streams are re-seeded",
                        checkpoint.get("world_size"), self.dist.world_size)  # fmt: skip
            mine = {**ranks[0], "objective": self.objective.state_dict(),
                    "augment": {**self.augment.state_dict(), "p": ranks[0]["augment"]["p"]}}  # fmt: skip
            if self.simulate is not None:
                mine["pairs"] = self.simulate.state_dict()
        self.objective.load_state_dict(mine["objective"])
        self.augment.load_state_dict(mine["augment"])
        if self.simulate is not None and "pairs" in mine:
            self.simulate.load_state_dict(mine["pairs"])
        return int(checkpoint["step"])


def _digest(nets: dict[str, nn.Module]) -> dict[str, list[float]]:
    """Per network: the sum and the sum of squares of its parameters (float64), to compare processes."""
    out = {}
    for name, net in nets.items():
        flat = torch.cat([p.detach().double().flatten() for p in net.parameters()])
        out[name] = [flat.sum().item(), flat.square().sum().item()]
    return out


def _first_mismatch(expected: dict[str, Any], stored: dict[str, Any]) -> str | None:
    """The first parameter or buffer whose presence or shape differs, in words (None when all fit)."""
    for key, value in expected.items():
        if key not in stored:
            return f"{key} is missing from the checkpoint"
        if tuple(stored[key].shape) != tuple(value.shape):
            return f"{key} is {list(stored[key].shape)} in the checkpoint but {list(value.shape)} here"
    extra = [key for key in stored if key not in expected]
    return f"{extra[0]} is in the checkpoint but not in these networks" if extra else None


def get_rng_state() -> dict[str, Any]:
    """This process's global random states: torch (CPU and every GPU), numpy and Python."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": _plain_tuple(random.getstate()),
    }  # fmt: skip


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _plain_tuple(value: Any) -> Any:
    return [_plain_tuple(v) for v in value] if isinstance(value, tuple | list) else value
