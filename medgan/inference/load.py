"""A checkpoint's generators, ready to run: EMA weights, eval mode, on a device, with what they were trained on.

    model = load_generators("runs/ct-00000/checkpoints/step_0010000.pt", device="cuda")
    model.output                    # the generator inference runs (G, or CycleGAN's G_ab)
    model.task, model.cfg, model.record

Built with the one network recipe (`medgan.tasks.networks`) from the checkpoint's own config and
data record, so whatever trained it can run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medgan.errors import InputError
from medgan.tasks import TASKS, Task
from medgan.tasks.checkpoint import load_checkpoint
from medgan.tasks.config import TrainConfig, validate_config
from medgan.tasks.networks import build_task_networks

__all__ = ["Generators", "load_generators"]


@dataclass
class Generators:
    """The generators of one checkpoint and what inference needs to know about them."""

    nets: dict[str, nn.Module]  # eval mode, no gradients
    cfg: TrainConfig  # the run's resolved config
    record: dict[str, Any]  # the training data's record: window, spacing, orientation, modality
    task: Task
    path: str  # the checkpoint file

    @property
    def output(self) -> nn.Module:
        """The generator that makes the task's outputs."""
        return self.nets[self.task.output_network]

    @property
    def made(self) -> dict[str, Any]:
        """The data record of what `output` makes (its modality, units and window)."""
        return dict(self.task.output_record(self.record))


def load_generators(checkpoint: str, device: str | torch.device = "cpu") -> Generators:
    """The EMA generators of a checkpoint (eval mode, on `device`), its config and data record."""
    state = load_checkpoint(checkpoint)
    try:
        cfg = validate_config(state["config"])
    except ValueError as err:
        raise InputError(f"the checkpoint's config is not valid for this medgan ({str(err).splitlines()[0]})",
                         path=checkpoint) from None  # fmt: skip
    record = state.get("data_record")
    if not isinstance(record, dict):
        raise InputError("the checkpoint holds no data record (what it was trained on), so its generator cannot "
                         "be built; use a checkpoint written by medgan train", path=checkpoint)  # fmt: skip
    try:
        nets = build_task_networks(cfg, record, generators_only=True)
    except KeyError as err:
        raise InputError(f"the checkpoint's data record lacks {err}; use a checkpoint written by medgan train",
                         path=checkpoint) from None  # fmt: skip
    weights = state.get("ema") or state["networks"]
    for name, net in nets.items():
        try:
            net.load_state_dict(weights[name])
        except (KeyError, RuntimeError) as err:
            raise InputError(f"the checkpoint's weights do not fit its config ({str(err).splitlines()[0][:120]})",
                             path=checkpoint) from None  # fmt: skip
        net.to(device).eval().requires_grad_(False)
    return Generators(nets, cfg, record, TASKS.get(cfg.task), checkpoint)
