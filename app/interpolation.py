"""Frame latents and labels of an interpolation: key seeds, slerp or lerp, open or looping paths."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.latent import latents, lerp, slerp

MIN_SLERP_NORM = 1e-6


def path_positions(frames: int, loop: bool) -> torch.Tensor:
    """(T,) fractions of the whole path: 0…1 inclusive when open; 0…1 exclusive when looping.

    A looping path ends one step before its start, so the GIF repeats without a stutter.
    """
    if loop:
        return torch.arange(frames, dtype=torch.float64) / frames
    return torch.linspace(0.0, 1.0, frames, dtype=torch.float64)


def frame_latents(keys: torch.Tensor, frames: int, loop: bool, method: str) -> torch.Tensor:
    """Key latents (K, z_dim) → (T, z_dim) frame latents along the path through them.

    The path visits the keys in order (and comes back to the first when ``loop``); frames
    are spread evenly over its segments, each segment interpolated with slerp or lerp.
    """
    if keys.shape[0] == 1:
        keys = keys.repeat(2, 1)
    if loop:
        keys = torch.cat([keys, keys[:1]])
    segments = keys.shape[0] - 1
    u = path_positions(frames, loop) * segments  # (T,) in [0, segments]
    seg = u.floor().long().clamp(max=segments - 1)
    t = (u - seg).float()
    out = torch.empty(frames, keys.shape[1], dtype=keys.dtype)
    for s in range(segments):
        mask = seg == s
        if mask.any():
            a, b = keys[s], keys[s + 1]
            # slerp divides by the keys' norms: a latent scaled to (nearly) zero by a tiny truncation
            # (ψ = 5e-324 is > 0 but z·ψ underflows in float32) would make NaN frames; lerp is exact there.
            fn = slerp if method == "slerp" and min(a.norm(), b.norm()) > MIN_SLERP_NORM else lerp
            out[mask] = fn(a, b, t[mask]).to(keys.dtype)
    return out


def morph_labels(from_label: int, to_label: int, num_classes: int, frames: int, loop: bool) -> torch.Tensor:
    """(T, K) soft labels going from one class to another (and back when ``loop``)."""
    g = path_positions(frames, loop)
    if loop:
        g = 1.0 - (2.0 * g - 1.0).abs()  # 0 → 1 → 0
    g = g.float()[:, None]
    eye = torch.eye(num_classes)
    return (1.0 - g) * eye[from_label] + g * eye[to_label]


@dataclass(frozen=True)
class FrameLatents:
    """The (frames, z_dim) latents of an interpolation through the key seeds' latents (the seed rule,
    scaled by ``truncation``), drawn in the model's worker thread (``app.batcher.LatentSource``)."""

    keys: tuple[int, ...]
    z_dim: int
    truncation: float
    frames: int
    loop: bool
    method: str

    @property
    def rows(self) -> int:
        return self.frames

    def __call__(self) -> torch.Tensor:
        key_z = latents(list(self.keys), self.z_dim, self.truncation)  # (K, z_dim)
        return frame_latents(key_z, self.frames, self.loop, self.method)  # (T, z_dim)


@dataclass(frozen=True)
class MorphLabels:
    """The (frames, K) soft labels of a class morph, made in the model's worker thread."""

    from_label: int
    to_label: int
    num_classes: int
    frames: int
    loop: bool

    def __call__(self) -> torch.Tensor:
        return morph_labels(self.from_label, self.to_label, self.num_classes, self.frames, self.loop)
