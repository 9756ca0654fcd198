"""Projection: the latent a GAN generator draws a given image from, found by gradient descent.

``project`` runs ``steps`` Adam steps on the pixel mean squared error (in [-1, 1]) between
``generator(z, label)`` and the image, from ``RESTARTS`` seeded starts at once (the latents of
seeds 0…RESTARTS−1, one batch), and returns the start's best latent. The same image, label,
model and step count give the same latent bit for bit: the starts are fixed and every operation
is deterministic on the CPU (run torch single-threaded for that). The service runs it in its own
pool (``app.projection``); ``python -m training evaluate-encoding`` measures what it recovers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from training.latent import latents

RESTARTS = 4  # seeded starts optimised side by side (one batch); the best one is returned
LEARNING_RATE = 0.05
PROJECTABLE = ("mlp-gan", "dcgan", "cgan", "acgan", "wgan-gp")  # GAN generators: z → image, no encoder


class Cancelled(Exception):
    """The caller that asked for the projection went away."""


@dataclass(frozen=True)
class Projection:
    z: np.ndarray  # (z_dim,) float32: the best latent found
    mse: float  # its image's mean squared error to the target, in [-1, 1] units
    steps: int


def project(generator: nn.Module, target: torch.Tensor, label: int | None, z_dim: int, steps: int,
            restarts: int = RESTARTS, lr: float = LEARNING_RATE,
            cancelled: Callable[[], bool] | None = None) -> Projection:
    """The latent whose image is closest to ``target`` (1, C, H, W) in [-1, 1] (pixel MSE), by ``steps``
    Adam steps from the seeded starts; ``generator`` in eval mode with its parameters frozen. Deterministic."""
    if steps < 0:
        raise ValueError(f"steps must be ≥ 0, got {steps}")
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
