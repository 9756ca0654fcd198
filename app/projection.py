"""Projection: the latent a GAN generator draws a given image from, found by gradient descent.

``project`` runs ``steps`` Adam steps on the pixel mean squared error (in [-1, 1]) between
``generator(z, label)`` and the image, from ``RESTARTS`` seeded starts at once (the latents of
seeds 0…RESTARTS−1, one batch), and returns the start's best latent. The same image, label,
model and step count give the same latent bit for bit: the starts are fixed, every operation
is deterministic on the CPU, and the pool's threads run torch single-threaded.

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from app.settings import MAX_PROJECTION_STEPS
from training.latent import latents

log = logging.getLogger(__name__)

RESTARTS = 4  # seeded starts optimised side by side (one batch); the best one is returned
LEARNING_RATE = 0.05
PROJECTABLE = ("mlp-gan", "dcgan", "cgan", "acgan", "wgan-gp")  # GAN generators: z → image, no encoder


class Cancelled(Exception):
    """The request that asked for the projection went away."""


@dataclass(frozen=True)
class Projection:
    z: np.ndarray  # (z_dim,) float32: the best latent found
    mse: float  # its image's mean squared error to the target, in [-1, 1] units
    steps: int


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
    """The latent whose image is closest to ``target`` (1, C, H, W) in [-1, 1] (pixel MSE), by ``steps``
    Adam steps from the seeded starts; ``generator`` is ``differentiable_copy``'s. Deterministic."""
    if not 0 <= steps <= MAX_PROJECTION_STEPS:
        raise ValueError(f"steps must be in 0…{MAX_PROJECTION_STEPS}, got {steps}")
    z = latents(range(restarts), z_dim).clone().requires_grad_(True)  # (R, z_dim): the seeded starts
    labels = None if label is None else torch.full((restarts,), label, dtype=torch.long)
    opt = torch.optim.Adam([z], lr=lr, foreach=False)
    best_loss = torch.full((restarts,), float("inf"))
    best_z = z.detach().clone()
    for step in range(steps + 1):
        if cancelled is not None and cancelled():
            raise Cancelled
        with torch.enable_grad():
            image = generator(z, labels)  # (R, C, H, W)
            per_row = ((image - target) ** 2).mean(dim=(1, 2, 3))  # (R,): the loss at the current z
        with torch.no_grad():
            better = per_row.detach() < best_loss
            best_loss = torch.where(better, per_row.detach(), best_loss)
            best_z[better] = z.detach()[better]
        if step == steps:  # the last step's latent was just scored
            break
        (grad,) = torch.autograd.grad(per_row.sum(), z)
        z.grad = grad
        opt.step()
    i = int(torch.argmin(best_loss))
    return Projection(best_z[i].numpy().astype(np.float32), float(best_loss[i]), steps)


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
