"""A VAE decoder sampled through a Gaussian mixture fitted to its encoder's codes ("ex-post density
estimation", Ghosh et al. 2020, *From Variational to Deterministic Autoencoders*, §4).

A VAE is trained to decode the codes its encoder gives training images, and the KL term only pulls
the codes' distribution (the aggregate posterior) towards N(0, I): the two never meet. Decoding
prior samples therefore lands partly between the codes the decoder knows — the blurred, in-between
garments of a plain VAE. Fitting a K-component, full-covariance Gaussian mixture to the training
set's codes after training and drawing codes from it instead puts samples where the decoder has
learned to draw (``training/expost.py`` fits it; ``--expost-gmm K``).

The served generator keeps the one seed → latent rule: it takes z ~ N(0, I) of ``latent_dim + 1``
entries and maps it onto the mixture deterministically. z's first entry picks the component by
inverse-CDF sampling — the component k whose interval of the cumulative weights holds Φ(z₀) — and the
rest becomes that component's sample ``μ_k + L_k z[1:]`` (L_k the Cholesky factor of Σ_k), so a
seed still fixes the image and z ~ N(0, I) gives codes distributed exactly as the mixture. Where an
interpolation path crosses a component boundary (Φ(z₀) passes a cumulative weight) the code jumps
from one component to the other; within a component the path is smooth. Truncation (ψ·z) pulls z₀
towards the median component and the rest towards its component's mean.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from training.models.registry import build_generator, register_generator


@register_generator
class ExPostGenerator(nn.Module):
    """z (B, latent_dim + 1) → a code from the mixture → the decoder's images (B, C, H, W)."""

    weights: torch.Tensor  # (K,) the components' weights
    means: torch.Tensor  # (K, d)
    scale_tril: torch.Tensor  # (K, d, d) the Cholesky factors of the covariances

    def __init__(self, decoder: dict[str, Any], components: int) -> None:
        super().__init__()
        if not isinstance(decoder, dict) or set(decoder) != {"class", "kwargs"}:
            raise ValueError("decoder must be {'class': name, 'kwargs': {...}} of a registered generator")
        if int(components) < 1:
            raise ValueError(f"components must be ≥ 1, got {components}")
        self.decoder = build_generator(decoder["class"], dict(decoder["kwargs"]))
        if getattr(self.decoder, "num_classes", 0):
            raise ValueError("the decoder of an ex-post mixture must be unconditional")
        d = int(self.decoder.z_dim)  # type: ignore[arg-type]
        self.latent_dim, self.components = d, int(components)
        self.z_dim, self.num_classes = d + 1, 0
        self.register_buffer("weights", torch.full((self.components,), 1.0 / self.components))
        self.register_buffer("means", torch.zeros(self.components, d))
        self.register_buffer("scale_tril", torch.eye(d).repeat(self.components, 1, 1))

    @torch.no_grad()
    def set_mixture(self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor) -> None:
        """Set the mixture from its weights (K,), means (K, d) and covariance matrices (K, d, d)."""
        k, d = self.components, self.latent_dim
        if weights.shape != (k,) or means.shape != (k, d) or covariances.shape != (k, d, d):
            raise ValueError(f"a mixture of {k} components in {d} dimensions needs weights ({k},), means ({k}, {d}) "
                             f"and covariances ({k}, {d}, {d}); got {tuple(weights.shape)}, {tuple(means.shape)}, "
                             f"{tuple(covariances.shape)}")
        w = weights.double()
        if (w < 0).any() or not math.isclose(float(w.sum()), 1.0, abs_tol=1e-6):
            raise ValueError("mixture weights must be non-negative and sum to 1")
        chol, info = torch.linalg.cholesky_ex(covariances.double())
        if (info != 0).any():
            raise ValueError(f"mixture covariances must be positive definite; component(s) "
                             f"{torch.nonzero(info).flatten().tolist()} are not")
        self.weights.copy_(w)
        self.means.copy_(means.double())
        self.scale_tril.copy_(chol)

    @staticmethod
    def _wide(z: torch.Tensor) -> torch.dtype:
        return torch.float32 if z.device.type == "mps" else torch.float64  # MPS has no float64

    def component(self, z: torch.Tensor) -> torch.Tensor:
        """(B, z_dim) → (B,) the mixture component each latent's first entry picks."""
        wide = self._wide(z)
        u = torch.special.ndtr(z[:, 0].to(wide))
        edges = torch.cumsum(self.weights.to(wide), 0)
        return torch.searchsorted(edges, u.contiguous(), right=True).clamp_(max=self.components - 1)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """(B, z_dim) → (B, latent_dim) the decoder's inputs. In float64 (float32 on MPS), rounded once: a row's
        code does not depend on the batch it was computed in (the service checks that its images do not)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (B, {self.z_dim}), got {tuple(z.shape)}")
        wide = self._wide(z)
        k = self.component(z)
        tril = self.scale_tril.to(wide)[k]  # (B, d, d)
        code = self.means.to(wide)[k] + (tril @ z[:, 1:].to(wide).unsqueeze(-1)).squeeze(-1)
        return code.to(z.dtype)

    def latents_of(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) decoder inputs → (B, z_dim) latents that ``codes`` maps back onto them: the inverse
        of :meth:`codes`, used for an encoded image. Each code goes to its most likely component k (the
        highest posterior responsibility), z₀ to the centre of k's interval of the cumulative weights, and
        z[1:] to L_k⁻¹ (code − μ_k)."""
        if codes.ndim != 2 or codes.shape[1] != self.latent_dim:
            raise ValueError(f"codes must have shape (B, {self.latent_dim}), got {tuple(codes.shape)}")
        wide = self._wide(codes)
        tril = self.scale_tril.to(wide)  # (K, d, d)
        diff = (codes.to(wide)[:, None, :] - self.means.to(wide)[None]).unsqueeze(-1)  # (B, K, d, 1)
        white = torch.linalg.solve_triangular(tril[None], diff, upper=False).squeeze(-1)  # (B, K, d)
        log_det = torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        log_post = torch.log(self.weights.to(wide)) - 0.5 * (white**2).sum(-1) - log_det  # (B, K)
        k = log_post.argmax(1)  # (B,)
        edges = torch.cumsum(self.weights.to(wide), 0)
        lower = torch.cat([edges.new_zeros(1), edges[:-1]])
        z0 = torch.special.ndtri(((lower + edges) / 2)[k])  # (B,)
        rest = white[torch.arange(codes.shape[0], device=codes.device), k]  # (B, d)
        return torch.cat([z0[:, None], rest], 1).to(codes.dtype)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is not None:
            raise ValueError("this generator is unconditional: it takes no labels")
        return self.decoder(self.codes(z), None)
