"""Tensor ↔ image helpers shared by training grids, ``sample`` and the service."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] on any device → (B, H, W, C) uint8 on the CPU."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray, nrow: int, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """Tile (B, H, W, C) uint8 images into rows of ``nrow`` → (H', W', C)."""
    b, h, w, c = images.shape
    ncol = min(nrow, b)
    rows = -(-b // ncol)
    grid = np.full((rows * (h + padding) + padding, ncol * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(b):
        r, col = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (H, W, C) by an integer factor (crisp pixels)."""
    if scale == 1:
        return image
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def to_pil(image: np.ndarray) -> Image.Image:
    """(H, W, 1|3) uint8 → a PIL image in mode L or RGB."""
    return Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image, "L" if image.shape[2] == 1 else "RGB")


def png_bytes(image: np.ndarray, compress_level: int = 6) -> bytes:
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
