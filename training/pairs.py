"""Paired data for image-to-image translators: a named, deterministic transform of each target image.

No paired set is downloaded: the input of a pair is computed from its target, so any dataset gives pairs
(the training split to learn from, the test split for held-out pairs).

=========  ==========================================================================================
transform  the input of a pair (one channel, the target's size)
=========  ==========================================================================================
edges      Canny edge map of the target's luminance (scikit-image ``skimage.feature.canny``: Gaussian
           σ = 1, Sobel gradient, non-maximum suppression, hysteresis between 10 % and 20 % of the
           largest possible gradient): black lines (0) on white (255), as one draws on paper
grey       the target's luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B), for colour targets only
=========  ==========================================================================================

Computing ``edges`` costs about 0.4 ms per 32×32 image on one CPU core (0.55 ms at 64×64), as much as a
third of a training step of a batch of 64, so a run computes every training image's input once, at its
start (``make_inputs``), not per batch.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import torch

from training.checkpoint import Transform

TRANSFORMS: tuple[str, ...] = get_args(Transform)
EDGE_SIGMA = 1.0
LUMA = (0.299, 0.587, 0.114)


def input_channels(transform: str) -> int:
    """Channels of the input ``transform`` makes: one (an edge map or a grey image)."""
    check_transform(transform)
    return 1


def check_transform(transform: str, channels: int | None = None) -> None:
    """ValueError for an unknown transform, or ``grey`` of images that are grey already."""
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")
    if transform == "grey" and channels == 1:
        raise ValueError("grey → colour needs colour targets (--channels 3): grey images are their own greyscale")


def luminance(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) → float32 (N, H, W) luminance in [0, 255]."""
    x = images.float()
    if x.shape[1] == 1:
        return x[:, 0]
    w = torch.tensor(LUMA).view(1, 3, 1, 1)
    return (x * w).sum(1)


def edge_map(grey: np.ndarray) -> np.ndarray:
    """One float image (H, W) in [0, 1] → its Canny edges as uint8 (H, W): 0 on an edge, 255 elsewhere."""
    from skimage.feature import canny  # (imported here: the service reads transform names, not scikit-image)

    edges = canny(grey, sigma=EDGE_SIGMA, low_threshold=0.1, high_threshold=0.2)
    return np.where(edges, 0, 255).astype(np.uint8)


def make_inputs(images: torch.Tensor, transform: str) -> torch.Tensor:
    """uint8 targets (N, C, H, W) → uint8 inputs (N, 1, H, W) by ``transform``; the same images give the
    same inputs, bit for bit."""
    check_transform(transform, images.shape[1])
    lum = luminance(images)  # (N, H, W) in [0, 255]
    if transform == "grey":
        return lum.round().clamp(0, 255).to(torch.uint8)[:, None]
    grey = (lum / 255.0).numpy().astype(np.float64)
    return torch.from_numpy(np.stack([edge_map(g) for g in grey]))[:, None] if len(grey) else (
        torch.empty(0, 1, *images.shape[2:], dtype=torch.uint8))
