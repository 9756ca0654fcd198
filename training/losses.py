"""Losses as plain functions of logits (networks never compute their own GAN loss)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F


def d_targets(batch: int, device: torch.device, smoothing: float = 0.0, flip: float = 0.0,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Discriminator targets for real and fake: one-sided smoothing (real → 1 − s) and noisy labels.

    ``flip`` swaps each target with that probability (the ACGAN seed article's noisy labels).
    """
    real = torch.full((batch,), 1.0 - smoothing, device=device)
    fake = torch.zeros(batch, device=device)
    if flip > 0:
        real = torch.where(torch.rand(batch, device=device) < flip, 0.0, real)
        fake = torch.where(torch.rand(batch, device=device) < flip, 1.0 - smoothing, fake)
    return real, fake


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target)


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Goodfellow's non-saturating generator loss: −log D(G(z))."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def d_hinge_real(real_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits).mean()


def d_hinge_fake(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 + fake_logits).mean()


def g_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def critic_wasserstein(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The critic minimises E[D(fake)] − E[D(real)]."""
    return fake_scores.mean() - real_scores.mean()


def g_wasserstein(fake_scores: torch.Tensor) -> torch.Tensor:
    return -fake_scores.mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """WGAN-GP: (scores on real, scores on fake, penalty E[(‖∇D(x̂)‖ − 1)²]) from one critic pass.

    Real, fake and interpolated images go through the critic as one batch (the critic has
    no batch-norm, so batch composition does not matter, and DDP sees a single forward).
    """
    b = real.shape[0]
    eps = torch.rand(b, 1, 1, 1, device=real.device)
    interp = (eps * real + (1 - eps) * fake).requires_grad_(True)
    scores = critic(torch.cat([real, fake, interp]))
    real_s, fake_s, interp_s = scores.split(b)
    (grad,) = torch.autograd.grad(interp_s.sum(), interp, create_graph=True)
    penalty = ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
    return real_s, fake_s, penalty


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al., 2018): E‖∇ₓ D(x)‖² over real images x — the discriminator's slope where the
    data is. Penalising it keeps D from sharpening into a wall around the real images, the state in
    which D(real) → 1, D(fake) → 0 and G learns nothing. ``real`` must require grad and ``real_logits``
    come from it; the graph is kept so the penalty can be back-propagated into D."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def class_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ACGAN auxiliary classifier loss (also used for D-classifier pretraining)."""
    return F.cross_entropy(class_logits, labels)


def vae_elbo(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, kl_weight: float = 1.0,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative ELBO per image: Bernoulli reconstruction on pixels in [0, 1] + β·KL(q(z|x) ‖ N(0, I)).

    Images and reconstructions are in [-1, 1]; both are mapped to [0, 1] for the BCE.
    Returns (loss, reconstruction term, KL term), each averaged over the batch.
    """
    target = (x + 1) / 2
    prob = ((recon + 1) / 2).clamp(1e-6, 1 - 1e-6)
    rec = F.binary_cross_entropy(prob, target, reduction="sum") / x.shape[0]
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
    return rec + kl_weight * kl, rec, kl


def reconstruction(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Plain autoencoder loss: mean squared error."""
    return F.mse_loss(recon, x)
