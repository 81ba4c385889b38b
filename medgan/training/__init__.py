"""Training: the loop (`trainer.py`), task objectives, losses, augmentation, precision,
distribution, checkpoints, EMA and logging.

    from medgan.config import load_config
    from medgan.training import TrainConfig, train
    run_dir = train(load_config(TrainConfig, "configs/debug_cpu_unconditional.yaml"), run_dir="runs/debug")
"""

from __future__ import annotations

from medgan.tasks.config import TrainConfig
from medgan.training.trainer import train

__all__ = ["TrainConfig", "train"]
