"""Several processes (torchrun), or just one: the helpers are the identity when single-process.

    torchrun --nproc_per_node 8 -m medgan train -c configs/synth2d_256.yaml          # one node
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d \\
             --rdzv_endpoint HOST:29500 -m medgan train -c ...                      # each node

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; with WORLD_SIZE > 1 a process group is
started (NCCL on GPUs, gloo on CPUs). A single process never starts one (EDM's `get_rank()`
returns 0), so notebooks and tests need no environment.

Every network is wrapped in `DistributedDataParallel`, which averages its gradients while the
backward runs. The GAN phases fit DDP's model as they are: a discriminator called on real and on
fake images (and, for lazy R1, once more on real images whose input gradient is taken with
`create_graph`) before one backward, then called with its parameters frozen in the generator
phase, which leaves it nothing to reduce. `broadcast_buffers=False`: normalisation statistics stay
per process (rank 0's are saved), so calling a network several times before a backward never
overwrites a buffer the backward needs. A test trains every task with two processes and checks
that the ranks' weights stay identical.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Dist", "setup"]


@dataclass
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def reduce_sum(self, tensor: Tensor) -> Tensor:
        """Sum a tensor over processes (in place; returned for chaining)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def wrap(self, net: nn.Module, device: torch.device) -> nn.Module:
        """`net` in DistributedDataParallel (it starts from rank 0's parameters and buffers)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [device] if device.type == "cuda" else None
        # Buffers are not synced in the forward (newer torch names the switch forward_sync_buffers); gradients
        # are views into DDP's buckets, so they take the buckets' layout and are not copied into them.
        params = inspect.signature(DistributedDataParallel).parameters
        buffers = {"forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers": False}
        return DistributedDataParallel(net, device_ids=ids, output_device=device if ids else None,
                                       gradient_as_bucket_view=True, **buffers)  # fmt: skip

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every process (a run folder name, say)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order (RNG states for a checkpoint)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def shutdown(self) -> None:
        if self.started_group and dist.is_initialized():
            dist.destroy_process_group()


def setup(device_name: str = "auto") -> Dist:
    """Join the torchrun job if there is one; the backend follows the device (NCCL or gloo)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    started = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        started = True
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank, started_group=started)
