"""The quality metrics, each a plain function of arrays with a known answer in tests.

Feature-space metrics take (N, D) float arrays of evaluator features; pixel-space ones
take (N, C, H, W) images. Nothing here loads a model or a dataset.

=====================  =================================================================
metric                 what a bad generator does to it
=====================  =================================================================
FID                    Fréchet distance of Gaussians fitted to the two feature sets;
                       compare to the real-vs-real floor at the same sample count
KID                    unbiased MMD² with the cubic polynomial kernel, mean over subsets;
                       ≈ 0 for equal distributions whatever the sample count
precision / density    fraction of fakes inside the real manifold (k-NN balls) — quality
recall / coverage      how much of the real manifold the fakes reach — diversity
accuracy               the evaluator agrees with the label a conditional sample was drawn for
class histogram        the evaluator's class shares of the samples: modes covered, KL to uniform
memorisation           fakes closer to a training image than almost all unseen test images are
checkerboard ratio     share of spectral energy at the period-2 (Nyquist) frequencies, fake/real
=====================  =================================================================
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from scipy import linalg

# --- FID ---------------------------------------------------------------------------------


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) → mean (D,) and unbiased covariance (D, D), in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N ≥ 2, D) features, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """‖μ₁−μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½) between two Gaussians (scipy.linalg.sqrtm).

    A near-singular product gets ``eps``·I added to both covariances (as pytorch-fid
    does); the imaginary part left by numerical error is dropped.
    """
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products are handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    fid = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(fid, 0.0)


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature sets (N, D) and (M, D)."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


# --- KID ---------------------------------------------------------------------------------


def kid(features_a: np.ndarray, features_b: np.ndarray, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance in any feature space → (mean, std) over random subsets.

    k(x, y) = (xᵀy / D + 1)³; each subset's MMD² is the unbiased estimator (diagonals
    of the within-set kernel matrices left out), so equal distributions give ≈ 0 and
    the value may be slightly negative.
    """
    a = torch.as_tensor(np.asarray(features_a, np.float64))
    b = torch.as_tensor(np.asarray(features_b, np.float64))
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    d = a.shape[1]
    rng = np.random.RandomState(seed)

    def kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = x @ y.T / d + 1
        return k * k * k  # (m, m); k * k * k is much faster than ** 3

    vals = np.empty(num_subsets)
    for i in range(num_subsets):
        x = a[torch.as_tensor(rng.choice(a.shape[0], m, replace=False))]
        y = b[torch.as_tensor(rng.choice(b.shape[0], m, replace=False))]
        kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        vals[i] = float(within - 2 * kxy.mean())
    return float(vals.mean()), float(vals.std())


# --- precision / recall / density / coverage (Naeem et al. 2020) --------------------------


def _pairwise_min_k(x: torch.Tensor, y: torch.Tensor, k: int, chunk: int = 2048, exclude_self: bool = False,
                    ) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest row of y → (N,). ``exclude_self``: x is y."""
    out = []
    for start in range(0, x.shape[0], chunk):
        d = torch.cdist(x[start:start + chunk], y)
        kk = k + 1 if exclude_self else k  # the point itself is its own nearest neighbour (distance 0)
        out.append(d.topk(kk, dim=1, largest=False).values[:, kk - 1])
    return torch.cat(out)


PRDC_KEYS = ("precision", "recall", "density", "coverage")


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5, chunk: int = 2048) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` features (k-NN radii).

    precision: share of fakes inside some real sample's k-NN ball; recall: share of reals
    inside some fake's k-NN ball; density: mean number of real balls holding a fake, / k
    (≈ 1 for equal distributions, can exceed 1); coverage: share of real balls holding a fake.
    """
    return prdc_and_covered(real, fake, k, chunk)[0]


def coverage_by_class(covered: np.ndarray, real_labels: np.ndarray, num_classes: int) -> list[float | None]:
    """Coverage of each class's real samples (``covered`` from ``prdc_and_covered``): which parts
    of the real data the fakes miss. None for a class with no real sample."""
    covered, real_labels = np.asarray(covered, bool), np.asarray(real_labels)
    return [float(covered[real_labels == c].mean()) if (real_labels == c).any() else None
            for c in range(num_classes)]


def prdc_and_covered(real: np.ndarray, fake: np.ndarray, k: int = 5, chunk: int = 2048,
                     ) -> tuple[dict[str, float], np.ndarray]:
    """``prdc`` and, per real sample, whether its k-NN ball holds a fake → (values, (Nr,) bool)."""
    r = torch.as_tensor(np.asarray(real, np.float32))
    f = torch.as_tensor(np.asarray(fake, np.float32))
    if r.shape[0] <= k or f.shape[0] <= k:
        raise ValueError(f"PRDC with k={k} needs more than {k} samples in each set")
    real_radii = _pairwise_min_k(r, r, k, chunk, exclude_self=True)  # (Nr,)
    fake_radii = _pairwise_min_k(f, f, k, chunk, exclude_self=True)  # (Nf,)
    in_real_balls = torch.zeros(f.shape[0])  # per fake: how many real balls contain it
    real_covered = torch.zeros(r.shape[0], dtype=torch.bool)
    for start in range(0, f.shape[0], chunk):
        d = torch.cdist(f[start:start + chunk], r)  # (chunk, Nr)
        inside = d <= real_radii[None, :]
        in_real_balls[start:start + chunk] = inside.sum(1).float()
        real_covered |= inside.any(0)
    real_in_fake = torch.zeros(r.shape[0], dtype=torch.bool)
    for start in range(0, r.shape[0], chunk):
        d = torch.cdist(r[start:start + chunk], f)  # (chunk, Nf)
        real_in_fake[start:start + chunk] = (d <= fake_radii[None, :]).any(1)
    return {
        "precision": float((in_real_balls > 0).float().mean()),
        "recall": float(real_in_fake.float().mean()),
        "density": float(in_real_balls.sum() / (k * f.shape[0])),
        "coverage": float(real_covered.float().mean()),
    }, real_covered.numpy()


# --- classes ------------------------------------------------------------------------------


def class_accuracy(predicted: np.ndarray, intended: np.ndarray, num_classes: int) -> tuple[float, list[float | None]]:
    """(overall accuracy, per-class accuracy with None for classes never asked for)."""
    predicted, intended = np.asarray(predicted), np.asarray(intended)
    per: list[float | None] = []
    for c in range(num_classes):
        mask = intended == c
        per.append(float((predicted[mask] == c).mean()) if mask.any() else None)
    return float((predicted == intended).mean()) if len(intended) else float("nan"), per


def class_histogram(predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of samples the evaluator puts in each class → (K,) summing to 1."""
    counts = np.bincount(np.asarray(predicted, np.int64), minlength=num_classes)[:num_classes].astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def modes_covered(histogram: np.ndarray, min_share_of_uniform: float = 0.1) -> int:
    """Classes holding at least ``min_share_of_uniform`` × 1/K of the samples.

    A count threshold rather than "at least one sample": a collapsed generator still
    gets a few samples misclassified into every class.
    """
    h = np.asarray(histogram, np.float64)
    return int((h >= min_share_of_uniform / len(h)).sum())


def kl_to_uniform(histogram: np.ndarray) -> float:
    """KL(p ‖ uniform) = log K − H(p), in nats: 0 for balanced classes, log K for one class."""
    p = np.asarray(histogram, np.float64)
    p = p / p.sum()
    nz = p[p > 0]
    return float(math.log(len(p)) + (nz * np.log(nz)).sum())


# --- memorisation ---------------------------------------------------------------------------


def nearest_distances(queries: np.ndarray | torch.Tensor, references: np.ndarray | torch.Tensor,
                      chunk: int = 1024) -> np.ndarray:
    """Euclidean distance from each query image to its nearest reference image, in pixel space.

    Images (N, ...) of any dtype are flattened and scaled as given (uint8 → /255).
    """
    def flat(a: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(a))
        scale = 255.0 if t.dtype == torch.uint8 else 1.0
        return t.reshape(t.shape[0], -1).float() / scale

    q, r = flat(queries), flat(references)
    r_sq = (r * r).sum(1)
    out = []
    for start in range(0, q.shape[0], chunk):
        x = q[start:start + chunk]
        # ‖x − r‖² = ‖x‖² + ‖r‖² − 2 x·r: one matmul per chunk instead of a (chunk, N, P) difference.
        best = torch.full((x.shape[0],), float("inf"))
        for rs in range(0, r.shape[0], 16384):
            d2 = (x * x).sum(1, keepdim=True) + r_sq[None, rs:rs + 16384] - 2 * x @ r[rs:rs + 16384].T
            best = torch.minimum(best, d2.min(1).values)
        out.append(best.clamp_min(0).sqrt())
    return torch.cat(out).numpy() if out else np.zeros(0)


MEMORIZATION_PERCENTILE = 1.0


def memorization_threshold(train: np.ndarray | torch.Tensor, test: np.ndarray | torch.Tensor,
                           percentile: float = MEMORIZATION_PERCENTILE) -> float:
    """The ``percentile``-th percentile of the distances from unseen test images to their nearest
    training image: real unseen data falls under it with probability ≈ percentile/100."""
    return float(np.percentile(nearest_distances(test, train), percentile))


def memorized_fraction(generated: np.ndarray | torch.Tensor, train: np.ndarray | torch.Tensor,
                       threshold: float) -> float:
    """Share of generated images whose nearest training image is at most ``threshold`` away (≤, so exact
    copies count even if a few test images duplicate training images and the threshold is 0)."""
    return float((nearest_distances(generated, train) <= threshold).mean())


def memorization(generated: np.ndarray | torch.Tensor, train: np.ndarray | torch.Tensor,
                 test: np.ndarray | torch.Tensor, percentile: float = MEMORIZATION_PERCENTILE) -> tuple[float, float]:
    """(fraction of generated images nearer to a training image than the threshold, threshold).

    The threshold is ``memorization_threshold`` (test → nearest training image), so real unseen data
    scores ≈ percentile/100 and a generator that copies training images scores ≈ 1. (The evaluation
    computes the threshold once per dataset and caches it with the real side.)
    """
    threshold = memorization_threshold(train, test, percentile)
    return memorized_fraction(generated, train, threshold), threshold


# --- checkerboard ---------------------------------------------------------------------------


def nyquist_energy_fraction(images: np.ndarray | torch.Tensor) -> float:
    """Mean share of each image's non-DC spectral energy at the period-2 frequencies.

    The 2-D FFT of every channel; the rows and columns at frequency π (index H/2 and
    W/2; the nearest bin for odd sizes) are the energy of patterns that flip sign from
    one pixel to the next — the "checkerboard" of transposed convolutions.
    """
    x = torch.as_tensor(np.asarray(images)).double()
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    power = torch.fft.fft2(x).abs().pow(2)  # (N, C, H, W)
    nyq = torch.zeros(h, w, dtype=torch.bool)
    nyq[h // 2, :] = True
    nyq[:, w // 2] = True
    ac = power.sum((-2, -1)) - power[..., 0, 0]
    frac = power[..., nyq].sum(-1) / ac.clamp_min(1e-12)  # (N, C)
    return float(frac.mean())


def checkerboard_ratio(generated: np.ndarray | torch.Tensor, real: np.ndarray | torch.Tensor) -> float:
    """Nyquist energy share of generated images / that of real ones: ≈ 1 is clean, ≫ 1 is checkerboard."""
    return nyquist_energy_fraction(generated) / max(nyquist_energy_fraction(real), 1e-12)


def named(values: Sequence[float | None], names: Sequence[str]) -> dict[str, float | None]:
    return {n: (None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 6))
            for n, v in zip(names, values, strict=True)}
