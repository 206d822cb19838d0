"""Processes started by ``torchrun``: joining and leaving the process group, and sharing
small results. One process without torchrun is world size 1.

The backend follows the device the work runs on: NCCL when the processes compute on CUDA
(one GPU per process, ``cuda:LOCAL_RANK``), gloo on the CPU, also on a machine that has
GPUs (NCCL needs CUDA tensors, and a CPU run has none).
"""

from __future__ import annotations

import os
from typing import Any, List

import torch
import torch.distributed as dist

from ..core.errors import SrnPortError


def local_rank() -> int:
    """This process's index on its machine under torchrun (0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def process_device(kind: str = "cpu") -> torch.device:
    """The device of this process for work on ``kind`` (``cpu`` or ``cuda``): under torchrun
    each process takes the GPU of its LOCAL_RANK, which must exist."""
    if kind != "cuda":
        return torch.device(kind)
    rank, count = local_rank(), torch.cuda.device_count()
    if rank >= count:
        raise SrnPortError(f"Process LOCAL_RANK {rank} has no GPU of its own: this machine "
                           f"shows {count} CUDA device(s). Start at most {count} processes per "
                           f"machine (torchrun --nproc_per_node {count}), or use --device cpu.")
    return torch.device("cuda", rank)


def distributed(device: str = "cpu"):
    """(rank, world size) under torchrun, joining the process group on first use: NCCL for
    ``device`` cuda (after selecting this process's GPU), gloo otherwise. A process group
    that is already initialised is used as it is (also one of world size 1)."""
    if dist.is_available() and dist.is_initialized():  # a group joined before (or by the caller)
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    kind = torch.device(device).type
    if not dist.is_initialized():
        if kind == "cuda":
            torch.cuda.set_device(process_device("cuda"))
        dist.init_process_group("nccl" if kind == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def finish_distributed() -> None:
    """Leave the process group (under torchrun) once every process is done."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def gather(value: Any, world: int) -> List[Any]:
    """Every process's ``value`` (picklable), in rank order, on every process."""
    if world <= 1:
        return [value]
    out: List[Any] = [None] * world
    dist.all_gather_object(out, value)
    return out
