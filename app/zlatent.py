"""Explicit latents: ``z`` (and ``from_z``/``to_z``) as text in a URL.

A latent is written as the base64url encoding (RFC 4648 §5; the ``=`` padding optional) of its
z_dim little-endian float32 values, all finite — so ``encode`` can hand out a ``z`` for a real
image and that image is addressed by a URL like any seed: stateless, cacheable, the same on
every replica. ``decode_z`` checks the length before decoding anything (a longer text is refused
unread), then the alphabet, then that every value is finite; each refusal is a 422 naming the
length the model expects.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

import numpy as np
import torch

from app.service import ApiError

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")
FLOAT = np.dtype("<f4")


def z_chars(z_dim: int) -> int:
    """Characters of an unpadded base64url ``z`` of ``z_dim`` float32 values (4·z_dim bytes)."""
    return -(-(4 * z_dim * 4) // 3)


def expected(z_dim: int) -> str:
    """What a model's ``z`` is, for the error messages."""
    n = z_chars(z_dim)
    padded = -(-(4 * z_dim) // 3) * 4
    length = f"{n} characters" + (f" ({padded} with '=' padding)" if padded != n else "")
    return (f"the base64url encoding (RFC 4648 §5) of {z_dim} little-endian float32 values = {4 * z_dim} bytes: "
            f"{length}")


def decode_z(text: str, z_dim: int, param: str = "z") -> bytes:
    """The 4·z_dim bytes (little-endian float32, all finite) a ``z`` text stands for; 422 otherwise.

    The bytes, not the text, identify the latent (two spellings of one latent — padded or not —
    give one ETag)."""
    n = z_chars(z_dim)
    padded = -(-n // 4) * 4
    if len(text) > padded:
        raise ApiError(422, f"{param}: too long ({len(text)} characters); expected {expected(z_dim)}")
    body = text.rstrip("=")
    if len(text) - len(body) not in (0, padded - n) or not text.isascii() or not _ALPHABET.fullmatch(body):
        raise ApiError(422, f"{param}: not base64url (only A–Z a–z 0–9 - _, then optional '=' padding); "
                            f"expected {expected(z_dim)}")
    if len(body) != n:
        raise ApiError(422, f"{param}: wrong length ({len(body)} characters); expected {expected(z_dim)}")
    raw = base64.urlsafe_b64decode(body + "=" * (padded - n))
    values = np.frombuffer(raw, FLOAT)
    if not np.isfinite(values).all():
        raise ApiError(422, f"{param}: every value must be finite (no NaN or infinity); expected {expected(z_dim)}")
    return raw


def encode_z(z: np.ndarray) -> str:
    """The unpadded base64url text of a (z_dim,) latent, as ``decode_z`` reads it."""
    return base64.urlsafe_b64encode(np.ascontiguousarray(z, FLOAT).tobytes()).decode("ascii").rstrip("=")


def z_array(raw: bytes) -> np.ndarray:
    """(z_dim,) float32 of ``decode_z``'s bytes (native byte order, a copy)."""
    return np.frombuffer(raw, FLOAT).astype(np.float32)


def z_digest(raw: bytes) -> str:
    """A short, stable name of a latent's bytes (ETags, file names)."""
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class ExplicitLatents:
    """The (1, z_dim) latent of a ``z`` (``decode_z``'s bytes), scaled by ``truncation``: an
    ``app.batcher.LatentSource``, made in the model's worker thread like a seed's."""

    raw: bytes
    truncation: float = 1.0

    @property
    def rows(self) -> int:
        return 1

    def __call__(self) -> torch.Tensor:
        z = torch.from_numpy(z_array(self.raw))[None]  # (1, z_dim)
        return z * self.truncation if self.truncation != 1.0 else z
