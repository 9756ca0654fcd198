"""The one seed → latent rule, used by training grids, ``sample``, and the service.

``z = RandomState(seed).standard_normal(z_dim).astype(float32)``; image i of a grid
uses seed + i. The latent is drawn on the CPU with numpy so that a seed means the same
image on every device, then moved to the device by the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

SEED_MAX = 2**32 - 1


def check_seed(seed: int) -> int:
    if not 0 <= int(seed) <= SEED_MAX:
        raise ValueError(f"seed must be an integer in [0, {SEED_MAX}], got {seed}")
    return int(seed)


_local = threading.local()


def latent(seed: int, z_dim: int) -> np.ndarray:
    """(z_dim,) float32 latent for one seed: ``RandomState(seed).standard_normal(z_dim)``.

    Re-seeding a per-thread RandomState gives the same numbers as a new one (``seed`` also
    resets the cached Gaussian) at a fraction of the cost of building a new RandomState, which the
    service would otherwise pay for every image.
    """
    rs = getattr(_local, "rs", None)
    if rs is None:
        rs = _local.rs = np.random.RandomState()
    rs.seed(check_seed(seed))
    return rs.standard_normal(z_dim).astype(np.float32)


def latents(seeds: Sequence[int], z_dim: int, truncation: float = 1.0) -> torch.Tensor:
    """(B, z_dim) CPU float32 tensor; ``truncation`` ψ scales z toward the mean latent 0."""
    if not 0.0 < truncation <= 1.0:
        raise ValueError(f"truncation must be in (0, 1], got {truncation}")
    z = np.stack([latent(s, z_dim) for s in seeds]) if seeds else np.zeros((0, z_dim), np.float32)
    if truncation != 1.0:
        z = z * np.float32(truncation)
    return torch.from_numpy(z)


def grid_seeds(seed: int, n: int) -> list[int]:
    """Seeds of an n-image grid starting at ``seed``: seed, seed+1, …, all within range."""
    check_seed(seed)
    check_seed(seed + n - 1)
    return [seed + i for i in range(n)]


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows a and b (z_dim,) at fractions t (T,) → (T, z_dim)."""
    a_n, b_n = a / a.norm(), b / b.norm()
    omega = torch.arccos((a_n * b_n).sum().clamp(-1.0, 1.0))
    so = torch.sin(omega)
    t = t[:, None]
    if so.abs() < 1e-6:  # (anti)parallel: fall back to lerp
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t[:, None]
    return (1 - t) * a + t * b
