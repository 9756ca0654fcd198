"""Cluster labels for a self-conditioned GAN: k-means of the training images, in equal-sized clusters.

A self-conditioned GAN (Liu et al., "Diverse Image Generation via Self-Conditioned GANs", CVPR 2020)
is unconditional to its users — no labels go in, none come out — but inside it is trained like a
cGAN: each real image carries the cluster it falls in, each generated image the categorical code its
latent drew (``--latent-categories K``), and D judges image and cluster together. The generator so
learns each cluster's images under its own code, as a cGAN learns each class — the remedy for the
samples *between* modes that an unconditional generator, a continuous map of one Gaussian, draws.

The paper clusters D's features and re-clusters as D learns; this module clusters once, before
training, in pixel space (the leading principal components of the images), which needs no network and
no schedule, and makes the clusters **equal in size**: the generator draws its code uniformly (the
largest of z's first K entries), so clusters of the data's sizes would draw small ones too often.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.cluster.vq import kmeans2

PCA_DIMS = 32
RESTARTS = 5


def cluster_labels(images: torch.Tensor, k: int, seed: int = 0, dims: int = PCA_DIMS) -> torch.Tensor:
    """uint8 images (N, C, H, W) → (N,) int64 cluster indices 0…k−1, each used ⌊N/k⌋ or ⌈N/k⌉ times.

    Deterministic for the same images, k and seed (the k-means++ starts are seeded)."""
    n = images.shape[0]
    if not 2 <= k <= n:
        raise ValueError(f"cannot cut {n} images into {k} clusters")
    x = images.reshape(n, -1).double().numpy() / 255.0
    x -= x.mean(0)
    # Principal components from the (D, D) covariance: cheap for the small images trained here.
    _, vecs = np.linalg.eigh(x.T @ x / n)
    feats = x @ vecs[:, ::-1][:, : min(dims, x.shape[1])]
    best: tuple[float, np.ndarray] | None = None
    for restart in range(RESTARTS):  # k-means++ can start badly: keep the tightest of a few runs
        centroids, _ = kmeans2(feats, k, iter=30, minit="++", seed=seed * RESTARTS + restart)
        dist = (feats**2).sum(1)[:, None] - 2 * feats @ centroids.T + (centroids**2).sum(1)[None, :]  # (N, k)
        inertia = float(dist.min(1).sum())
        if best is None or inertia < best[0]:
            best = (inertia, dist)
    assert best is not None
    return torch.from_numpy(balanced_assignment(best[1])).long()


def balanced_assignment(dist: np.ndarray) -> np.ndarray:
    """(N, k) distances → (N,) cluster of each point, every cluster taking ⌊N/k⌋ or ⌈N/k⌉ points.

    Greedy over all (point, cluster) pairs from the nearest: a point goes to the nearest cluster that
    still has room. Most points get their nearest centroid; the overflow of big clusters goes to the
    next-nearest ones."""
    n, k = dist.shape
    room = np.full(k, n // k)
    room[: n % k] += 1
    out = np.full(n, -1)
    left = n
    for flat in np.argsort(dist, axis=None, kind="stable"):
        i, c = divmod(int(flat), k)
        if out[i] < 0 and room[c] > 0:
            out[i] = c
            room[c] -= 1
            left -= 1
            if not left:
                break
    return out
