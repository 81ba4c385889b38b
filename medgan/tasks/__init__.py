"""Tasks and their runs: what each task declares, the run-config schema, the network recipe, checkpoints.

Training (`medgan.training`) and inference (`medgan.inference`) both stand on this package; it
imports neither. A task is declared once here (`TASKS`), and its training objective is registered
under the same name in `medgan.training.objectives`.

    from medgan.tasks import TASKS
    task = TASKS.get("pix2pix")      # inputs, networks, options, what the generator makes
"""

from __future__ import annotations

from medgan.data.records import Input
from medgan.tasks import cyclegan, inpaint, latent, paired  # noqa: F401  (registers the tasks)
from medgan.tasks.base import TASKS, Task

__all__ = ["TASKS", "Input", "Task"]
