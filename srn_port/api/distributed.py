"""Processes started by ``torchrun``: joining and leaving the process group (gloo on CPU,
NCCL on CUDA), and sharing small results. One process without torchrun is world size 1."""

from __future__ import annotations

import os
from typing import Any, List

import torch
import torch.distributed as dist


def distributed():
    """(rank, world size) under torchrun, joining the process group on first use."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
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
