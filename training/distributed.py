"""DDP without a framework: a few lines keyed on the ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` variables that
torchrun sets (gloo on CPU, NCCL on CUDA); only rank 0 logs and writes."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from training.devices import pick_device


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


@contextmanager
def process_group(device_setting: str) -> Iterator[tuple[Dist, torch.device]]:
    """This process's place in the run and its device; with more than one process, the process group for
    the time of the ``with`` block.

    The group is shut down in an order that lets every process exit 0: when the block succeeds, a barrier
    first (no process tears its end down while rank 0 still writes); then the objects that hold the group
    — DDP's reducers inside the wrapped networks, unreachable once the block's frame is gone but possibly
    held in reference cycles — are collected while the interpreter is fully alive; then the group is
    destroyed. Left to interpreter shutdown, gloo's worker threads can be destroyed unjoined, and the
    process aborts (``terminate called without an active exception``) after its work is done."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    d = Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_setting, d.local_rank)
    if world == 1:
        yield d, device
        return
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    ok = False
    try:
        yield d, device
        ok = True
    finally:
        if ok:
            dist.barrier()
        gc.collect()
        if dist.is_initialized():
            dist.destroy_process_group()
