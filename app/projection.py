"""Projection in the service: ``POST /models/{model}/encode`` on a GAN generator.

The algorithm is ``training.projection.project`` (bounded Adam steps on the pixel error from
seeded starts: the same image gives the same latent), run on ``differentiable_copy`` of the served
module, with at most ``app.settings.MAX_PROJECTION_STEPS`` steps.

``ProjectionPool`` runs projections in their own few threads with a bounded queue (503 +
Retry-After when it is full), so a burst of uploads never takes the sampling workers' turn;
``GANSERVE_PROJECTION_WORKERS``, ``GANSERVE_PROJECTION_QUEUE`` and ``GANSERVE_PROJECTION_STEPS``
(at most ``app.settings.MAX_PROJECTION_STEPS``) size it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import nn

from app.settings import MAX_PROJECTION_STEPS
from training.projection import LEARNING_RATE, PROJECTABLE, RESTARTS, Cancelled, Projection
from training.projection import project as _project

log = logging.getLogger(__name__)

__all__ = ["PROJECTABLE", "RESTARTS", "Cancelled", "PoolFull", "Projection", "ProjectionPool", "differentiable_copy",
           "project"]


def differentiable_copy(generator: nn.Module) -> nn.Module:
    """A copy of a served generator that autograd can run: its parameters frozen (only z is
    optimised) and any product matrix cached under ``torch.inference_mode`` (``app.inference``)
    dropped, to be rebuilt as an ordinary tensor."""
    g = copy.deepcopy(generator).eval()
    for m in g.modules():
        if hasattr(m, "_matrix"):
            setattr(m, "_matrix", None)  # noqa: B010
    for p in g.parameters():
        p.requires_grad_(False)
    return g


def project(generator: nn.Module, target: torch.Tensor, label: int | None, z_dim: int, steps: int,
            restarts: int = RESTARTS, lr: float = LEARNING_RATE,
            cancelled: Callable[[], bool] | None = None) -> Projection:
    """``training.projection.project`` with the service's cap on ``steps``; ``generator`` is
    ``differentiable_copy``'s."""
    if not 0 <= steps <= MAX_PROJECTION_STEPS:
        raise ValueError(f"steps must be in 0…{MAX_PROJECTION_STEPS}, got {steps}")
    return _project(generator, target, label, z_dim, steps, restarts, lr, cancelled)


def _single_thread() -> None:
    torch.set_num_threads(1)


class PoolFull(Exception):
    """Every projection worker is busy and the queue is full: answer 503 with Retry-After."""


class ProjectionPool:
    """``workers`` threads for projections and at most ``queue_size`` more waiting."""

    def __init__(self, workers: int, queue_size: int) -> None:
        self.workers, self.queue_size = workers, queue_size
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ganserve-projection",
                                            initializer=_single_thread)
        self._admitted = 0  # running + waiting (event-loop thread only)

    @property
    def full(self) -> bool:
        return self._admitted >= self.workers + self.queue_size

    async def run(self, fn: Callable[[Callable[[], bool]], Any]) -> Any:
        """``fn(cancelled)`` in a projection thread; ``cancelled()`` turns true when the caller is gone."""
        if self.full:
            raise PoolFull
        gone = threading.Event()
        self._admitted += 1
        try:
            return await asyncio.wrap_future(self._executor.submit(fn, gone.is_set))
        finally:
            gone.set()
            self._admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
