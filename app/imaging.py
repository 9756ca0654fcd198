"""Encoding generated uint8 images as PNG grids, PNG strips and GIF animations.

All functions here are CPU-bound and are called off the event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import io
import math

import numpy as np
from isal import isal_zlib

from training.images import make_grid, png_bytes, to_pil, upscale

PADDING = 2  # pixels between the images of a grid or strip (as in the training sample grids)


def grid_side(n: int) -> int:
    """Images per row of an n-image grid: as square as possible."""
    return max(1, math.ceil(math.sqrt(n)))


def grid_shape(n: int, height: int, width: int, scale: int, nrow: int | None = None) -> tuple[int, int]:
    """(height, width) in pixels of the PNG ``encode_grid`` makes, without making it."""
    if n == 1:
        return height * scale, width * scale
    ncol = min(nrow or grid_side(n), n)
    rows = -(-n // ncol)
    return (rows * (height + PADDING) + PADDING) * scale, (ncol * (width + PADDING) + PADDING) * scale


# The service's PNGs are deflated by ISA-L (``isal``, Intel's zlib-compatible compressor) at its level 1:
# about the same sizes as the standard library's zlib at level 1 in a fraction of the time, and the
# encode is part of every request's CPU time (docs/history.md has the measurements). ISA-L's level 0
# is faster still, but its PNGs are much larger.
PNG_LEVEL = 1


def encode_grid(images: np.ndarray, scale: int, nrow: int | None = None) -> bytes:
    """(B, H, W, C) uint8 → PNG bytes: the image alone when B = 1, else a grid, upscaled ``scale``×."""
    image = images[0] if len(images) == 1 else make_grid(images, nrow or grid_side(len(images)), PADDING)
    return png_bytes(upscale(image, scale), PNG_LEVEL, isal_zlib.compress)


def encode_gif(frames: np.ndarray, scale: int, fps: float) -> bytes:
    """(T, H, W, C) uint8 → an endlessly repeating GIF at ``fps`` frames per second.

    Grey frames keep their exact 256 grey levels; RGB frames are quantised to a palette
    by Pillow. Consecutive identical frames are merged by the encoder (longer duration).
    """
    pics = [to_pil(upscale(f, scale)) for f in frames]
    buf = io.BytesIO()
    duration = max(20, round(1000 / fps))  # browsers clamp shorter GIF delays anyway
    pics[0].save(buf, format="GIF", save_all=True, append_images=pics[1:], duration=duration, loop=0,
                 optimize=False, disposal=1)
    return buf.getvalue()
