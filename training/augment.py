"""Differentiable augmentation of everything the discriminator sees (DiffAugment; Zhao et al., 2020).

A discriminator trained on a few thousand images learns them by heart: it tells real from fake
perfectly (D(real) → 1, D(fake) → 0) and its gradients stop telling the generator anything useful.
Augmenting the real images alone would teach the generator to make augmented images; DiffAugment
applies the same kind of random transform to real *and* generated images, in D's step and in G's,
and it is differentiable, so G's gradient flows back through it. What G learns is still the data's
distribution: the transforms are applied to both sides of the comparison.

Each transform draws its own random parameters per image. Images are in [-1, 1], (B, C, H, W).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

TRANSLATION_RATIO = 1 / 8  # shift by up to this fraction of the side, each axis
CUTOUT_RATIO = 1 / 2  # side of the erased square, as a fraction of the image side


def color(x: torch.Tensor) -> torch.Tensor:
    """Random brightness (± 0.5), saturation (× 0–2) and contrast (× 0.5–1.5) per image."""
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)
    mean_c = x.mean(dim=1, keepdim=True)  # a grey image is its own channel mean: saturation leaves it alone
    x = (x - mean_c) * (torch.rand(b, 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + mean_c
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift each image by a random whole number of pixels (up to ``ratio`` of its side) on each axis;
    what comes in from outside is 0 (mid-grey)."""
    b, _, h, w = x.shape
    sy, sx = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    dy = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device)[None, :, None] + dy + sy  # (B, H, 1) in the padded image
    cols = torch.arange(w, device=x.device)[None, None, :] + dx + sx  # (B, 1, W)
    padded = torch.nn.functional.pad(x, (sx, sx, sy, sy))
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, H, W, C) → (B, C, H, W)


def cutout(x: torch.Tensor, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Set a square of ``ratio`` × the side, at a random place per image (it may stick out of the
    image), to 0."""
    b, _, h, w = x.shape
    ch, cw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    top = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device) - cw // 2
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)  # (B, H, W)
    return x * (~inside)[:, None].to(x.dtype)


TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "color": color, "translation": translation, "cutout": cutout,
}


def parse_policy(text: str) -> tuple[str, ...]:
    """``"color,translation,cutout"`` → the transforms' names, in the order given ("" → none).
    Raises ValueError naming the allowed ones."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [n for n in names if n not in TRANSFORMS]
    if bad or len(set(names)) != len(names):
        what = f"unknown {', '.join(map(repr, bad))}" if bad else "a transform named twice"
        raise ValueError(f"{what}; give a comma-separated list of {', '.join(TRANSFORMS)}")
    return names


def diff_augment(x: torch.Tensor, policy: Sequence[str]) -> torch.Tensor:
    """Apply the transforms named in ``policy`` in order (none: ``x`` itself)."""
    for name in policy:
        x = TRANSFORMS[name](x)
    return x
