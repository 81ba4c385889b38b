"""Several processes (torchrun), or just one: the helpers are the identity when single-process.

    torchrun --nproc_per_node 8 -m medgan train -c configs/synth2d_256.yaml          # one node
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d \\
             --rdzv_endpoint HOST:29500 -m medgan train -c ...                      # each node

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; with WORLD_SIZE > 1 a process group is
started (NCCL on GPUs, gloo on CPUs). A single process never starts one (EDM's `get_rank()`
returns 0), so notebooks and tests need no environment.

Gradients are averaged explicitly after each phase's backward (StyleGAN2-ADA's approach)
rather than by wrapping networks in `DistributedDataParallel`: DDP's reducer cannot follow
the double backward of R1 and WGAN-GP penalties, nor a discriminator run several times
before one backward, and the explicit form keeps the GAN phases readable.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
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

    def reduce_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Average gradients over processes with one flat all-reduce (missing grads count as 0)."""
        if not self.enabled:
            return
        params = list(params)
        for p in params:
            if p.grad is None:  # every rank must send the same layout
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.flatten() for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p in params:  # copy back in place, keeping each gradient's memory layout
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view(p.grad.shape))
            offset += n

    def broadcast_modules(self, modules: Iterable[nn.Module]) -> None:
        """Make every process start from rank 0's parameters and buffers."""
        if not self.enabled:
            return
        for module in modules:
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

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
