"""Task objectives: what each player minimises, one small module per family of tasks.

`OBJECTIVES` maps a task name (declared in `medgan.tasks`) to the objective that trains it, with
the task bound, so `OBJECTIVES.build("pix2pix", nets=nets)` is a working objective with default
options. Variants of one family (unconditional / conditional; pix2pix / label2image) are one
class reading different declarations. Each module registers its objectives at its end.
"""

from __future__ import annotations

from medgan.training.objectives import cyclegan, inpaint, latent, paired  # noqa: F401  (registers the objectives)
from medgan.training.objectives.base import OBJECTIVES, Objective

__all__ = ["OBJECTIVES", "Objective"]
