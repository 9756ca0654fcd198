"""Cluster labels for a self-conditioned GAN: k-means of the training images, in equal-sized clusters.

A self-conditioned GAN (Liu et al., "Diverse Image Generation via Self-Conditioned GANs", CVPR 2020)
is unconditional to its users — no labels go in, none come out — but inside it is trained like a
cGAN: each real image carries the cluster it falls in, each generated image the categorical code its
latent drew (``--latent-categories K``), and D judges image and cluster together. The generator so
learns each cluster's images under its own code, as a cGAN learns each class — the remedy for the
samples *between* modes that an unconditional generator, a continuous map of one Gaussian, draws.

The first clusters are found before training, in pixel space (the leading principal components of the
images), which needs no network. The paper goes on to re-cluster on D's features as D learns: with
``--recluster-every N`` every N epochs :func:`recluster` runs k-means on D's (label-free) features of the
training images, started from the current clusters' means there, so cluster c stays cluster c — the code
G has learnt for it — while its members move to the images D finds alike. Clusters are **equal in
size**: the generator draws its code uniformly (the largest of z's first K entries), so clusters of the
data's sizes would draw small ones too often.
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
        dist = _sq_dist(feats, centroids)
        inertia = float(dist.min(1).sum())
        if best is None or inertia < best[0]:
            best = (inertia, dist)
    assert best is not None
    return torch.from_numpy(balanced_assignment(best[1])).long()


def recluster(feats: np.ndarray, prev: np.ndarray, k: int, iters: int = 10) -> np.ndarray:
    """(N, F) features of the training images and their current clusters (N,) → new equal-sized clusters.

    k-means on the unit-length features, started at each current cluster's mean: cluster c of the result
    grew out of cluster c, so the labels keep their meaning from one clustering to the next (the paper
    matches old and new clusters afterwards; starting from the old ones makes that match the identity).
    Deterministic: no random start."""
    if prev.shape != (feats.shape[0],) or prev.min() < 0 or prev.max() >= k:
        raise ValueError(f"need one cluster in 0…{k - 1} per feature row, got {prev.shape} for {feats.shape}")
    f = feats.astype(np.float64)
    f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    start = np.stack([f[prev == c].mean(0) if (prev == c).any() else f[c] for c in range(k)])
    centroids, _ = kmeans2(f, start, iter=iters, minit="matrix")
    return balanced_assignment(_sq_dist(f, centroids))


def _sq_dist(feats: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N, F), (k, F) → (N, k) squared Euclidean distances."""
    return (feats**2).sum(1)[:, None] - 2 * feats @ centroids.T + (centroids**2).sum(1)[None, :]


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
