"""Run under torchrun by test_distributed.py: every debug task, trained by this process group in turn."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from medgan.config import load_config
from medgan.data.phantom_pairs import write_phantom_pairs
from medgan.tasks import TASKS
from medgan.training import TrainConfig, train
from medgan.training.objectives import OBJECTIVES

out, pairs, repo = sys.argv[1], sys.argv[2], sys.argv[3]
torch.set_num_threads(1)
dist.init_process_group("gloo")  # started here, so every train() call joins it rather than starting its own
common = [
    "train.steps=3", "train.log_every_steps=3", "train.sample_every_steps=3", "train.checkpoint_every_steps=3",
    "train.batch_size=2", "train.num_samples=2", "train.tensorboard=false", "loss.r1_interval_steps=2",
]  # fmt: skip
volumes = os.path.join(out, "volumes")  # two 3D phantoms: one scan cannot be shared among two processes
if dist.get_rank() == 0:
    write_phantom_pairs(volumes, count=2, spatial_dims=3, shape=(32, 32, 24), spacing_mm=(8.0, 8.0, 6.0))
dist.barrier()
for task in (*OBJECTIVES.names(), "3d"):
    paired = task in TASKS and any(i.required and i.is_file and i.key != "image" for i in TASKS.get(task).inputs)
    extra = [f"data.source={pairs}", "loss.r1_gamma=0.5"] if paired else []  # a penalty through DDP for these too
    if task == "3d":
        extra.append(f"data.source={os.path.join(volumes, 'pairs.csv')}")
    if task == "unconditional":  # the shipped 2D recipe's discriminator head, whose decoder R1 leaves unused
        extra += ["discriminator.options.reconstruction_head=true", "data.image_size=[32,32]"]
    cfg = load_config(TrainConfig, os.path.join(repo, "configs", f"debug_cpu_{task}.yaml"), [*common, *extra])
    train(cfg, run_dir=os.path.join(out, task))
dist.destroy_process_group()
