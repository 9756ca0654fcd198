"""Tensor ↔ image helpers shared by training grids, ``sample`` and the service."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] on any device → (B, H, W, C) uint8 on the CPU.

    clamp to [-1, 1], then (x + 1) · 127.5 rounded half to even. On an accelerator the conversion
    runs there (a quarter of the bytes cross to the host); on the CPU it runs in numpy, the same
    arithmetic in one chain of array operations instead of eight torch calls (faster, and each torch
    call lets the interpreter lock go to another thread — on the service's worker thread, a wait to
    get it back).
    """
    if images.device.type != "cpu":
        x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()
    a = np.clip(images.detach().float().numpy(), -1.0, 1.0)  # a new float32 array: safe to change in place
    a += 1.0
    a *= 127.5
    return np.rint(a, out=a).astype(np.uint8).transpose(0, 2, 3, 1)


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


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


_PNG_END = _png_chunk(b"IEND", b"")


Compressor = Callable[[bytes, int], bytes]  # (data, level) → a zlib stream, like zlib.compress


def png_bytes(image: np.ndarray, compress_level: int = 6, compress: Compressor = zlib.compress) -> bytes:
    """(H, W, 1|3) uint8 → an 8-bit grey or RGB PNG (no filter, one zlib stream at ``compress_level``).

    ``compress`` makes the zlib stream: the standard library's by default; any zlib-format
    compressor will do (the service passes ISA-L's, several times faster at the same size).

    Written directly (signature, IHDR, one IDAT, IEND) instead of through Pillow: for the service's
    28×28 images Pillow's per-call machinery cost more than the compression itself
    (docs/history.md). Any PNG decoder reads it; the tests check that
    Pillow reads back the exact pixels.
    """
    if image.ndim != 3 or image.shape[2] not in (1, 3) or image.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 1|3) uint8, got {image.dtype} {image.shape}")
    h, w, c = image.shape
    rows = np.zeros((h, w * c + 1), np.uint8)  # each row: filter type 0, then the samples
    rows[:, 1:] = image.reshape(h, w * c)
    header = struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, 0)
    return b"".join((_PNG_SIGNATURE, _png_chunk(b"IHDR", header),
                     _png_chunk(b"IDAT", compress(rows.tobytes(), compress_level)), _PNG_END))
