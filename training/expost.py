"""``--expost-gmm K``: fit the Gaussian mixture an :class:`~training.models.expost.ExPostGenerator` samples
its VAE decoder through (the model and why: ``training/models/expost.py``).

The mixture is fitted by scikit-learn's EM (``GaussianMixture``, full covariances) to the encoder's
means μ(x) of training images — the deterministic codes, as Ghosh et al. do — at most
``FIT_CODES`` of them, drawn with the run's seed: EM's cost grows with the number of codes and a
100-dimensional, 30-component fit on all 60,000 Fashion-MNIST codes takes minutes on two cores.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.data import to_float
from training.models.expost import ExPostGenerator

FIT_CODES = 20_000  # codes the mixture is fitted to (a seeded subset of the training set when it is larger)
REG_COVAR = 1e-5  # added to every covariance's diagonal: keeps nearly flat directions positive definite
MAX_ITER = 200


@torch.no_grad()
def encode_means(encoder: nn.Module, images: torch.Tensor, z_dim: int, device: torch.device,
                 batch: int = 500) -> np.ndarray:
    """uint8 images (N, C, H, W) → (N, z_dim) float64: the encoder's means μ(x) (the first z_dim of its
    2·z_dim outputs), in eval mode; the encoder's mode is put back as it was."""
    was_training = encoder.training
    encoder.eval()
    try:
        out = [encoder(to_float(images[i:i + batch].to(device)))[:, :z_dim].double().cpu()
               for i in range(0, images.shape[0], batch)]
    finally:
        encoder.train(was_training)
    return torch.cat(out).numpy()


def fit_mixture(codes: np.ndarray, components: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, d) codes → the weights (K,), means (K, d) and covariances (K, d, d) of a K-component,
    full-covariance Gaussian mixture fitted by EM (k-means initialisation, seeded)."""
    from sklearn.mixture import GaussianMixture  # a training extra: the service never imports it

    if not 1 <= components <= codes.shape[0]:
        raise ValueError(f"a mixture of {components} components needs at least as many codes, got {codes.shape[0]}")
    gm = GaussianMixture(components, covariance_type="full", reg_covar=REG_COVAR, max_iter=MAX_ITER,
                         random_state=seed).fit(codes)
    weights = torch.from_numpy(gm.weights_).double()
    return weights / weights.sum(), torch.from_numpy(gm.means_), torch.from_numpy(gm.covariances_)


def expost_generator(decoder: nn.Module, decoder_spec: dict[str, object], encoder: nn.Module, images: torch.Tensor,
                     components: int, seed: int, device: torch.device) -> ExPostGenerator:
    """A new ExPostGenerator holding a copy of ``decoder``'s weights and the mixture fitted to ``encoder``'s
    codes of (a seeded subset of at most FIT_CODES of) ``images``; in eval mode, on ``device``. Its
    batch-norm statistics are still the decoder's: re-estimate them for the mixture's codes before use."""
    n = images.shape[0]
    pick = np.sort(np.random.default_rng(seed).choice(n, FIT_CODES, replace=False)) if n > FIT_CODES else None
    subset = images if pick is None else images[torch.from_numpy(pick)]
    z_dim = int(decoder.z_dim)  # type: ignore[arg-type]
    weights, means, covs = fit_mixture(encode_means(encoder, subset, z_dim, device), components, seed)
    g = ExPostGenerator(dict(decoder_spec), components)
    g.decoder.load_state_dict(decoder.state_dict())
    g.set_mixture(weights, means, covs)
    return g.to(device).eval().requires_grad_(False)
