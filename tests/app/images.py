"""Decoding helpers for the service tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(decode(data)).astype(np.int16)


def gif_frames(data: bytes) -> list[np.ndarray]:
    im = Image.open(io.BytesIO(data))
    out = []
    for i in range(getattr(im, "n_frames", 1)):
        im.seek(i)
        out.append(np.asarray(im.convert("L" if im.mode in ("L", "P") and _is_grey(im) else "RGB")))
    return out


def _is_grey(im: Image.Image) -> bool:
    pal = im.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal), 3))
