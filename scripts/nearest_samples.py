"""Samples of a checkpoint beside their nearest training images: the picture behind `memorization_fraction`.

    PYTHONPATH=. python scripts/nearest_samples.py checkpoints/emoji-cgan --per-class 2 --out docs/emoji/nearest.png

Draws ``--per-class`` samples of every class (seeds SEED, SEED+1, … as `evaluate` draws them: sample i has
label i mod K) and finds, for each, the training image nearest in pixel space — the distance `evaluate`'s
memorisation test uses (pixels in [0, 1] at the evaluator's size). The PNG has one column per class and, per
sample, two rows: the sample, then its nearest training image. Prints a markdown table of the distances
beside the checkpoint's ``memorization_threshold`` (a sample nearer than it counts as a copy).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from training.checkpoint import CheckpointError, load_generator
from training.data import DatasetError, load_dataset
from training.evaluation.evaluate import generate_uint8
from training.evaluation.evaluator import EvaluatorError, evaluator_for, to_evaluator_input
from training.images import make_grid, png_bytes, upscale


def nearest(queries: torch.Tensor, references: torch.Tensor, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(Q, P) and (R, P) float pixels → (index of the nearest reference (Q,), its Euclidean distance (Q,))."""
    idx, dist = [], []
    for q in queries.split(chunk):
        d = torch.cdist(q, references)  # (chunk, R)
        best = d.min(1)
        idx.append(best.indices)
        dist.append(best.values)
    return torch.cat(idx).numpy(), torch.cat(dist).numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--per-class", type=int, default=2, help="samples of each class")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--scale", type=int, default=1, help="nearest-neighbour upscaling of the PNG")
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args(argv)
    try:
        g, cfg = load_generator(args.checkpoint)
        if not cfg.conditional:
            raise CheckpointError(f"{cfg.name} is unconditional: this figure is per class")
        res, ch = cfg.image.height, cfg.image.channels
        train = load_dataset(cfg.dataset.name, "train", res, ch, cfg.training.options.get("data_dir"),
                             background=cfg.training.options.get("background", "white"))
    except (CheckpointError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    k = cfg.num_classes
    fake, labels = generate_uint8(g, cfg.z_dim, k, k * args.per_class, args.seed)  # (N, C, H, W), label i mod K

    try:  # as evaluate's memorisation test: pixels in [0, 1] at the evaluator's size and channels
        net, _ = evaluator_for(cfg.dataset.name)
        ech, eres = net.channels, net.resolution
    except EvaluatorError:
        ech, eres = ch, res

    def pixels(x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) uint8 → (N, P) float
        return ((to_evaluator_input(x, ech, eres) + 1) / 2).flatten(1)

    idx, dist = nearest(pixels(fake), pixels(train.images))
    rows = []
    for r in range(args.per_class):  # one row of samples, then the row of their nearest training images
        rows.append(fake[r * k:(r + 1) * k])
        rows.append(train.images[torch.as_tensor(idx[r * k:(r + 1) * k])])
    grid = make_grid(torch.cat(rows).permute(0, 2, 3, 1).numpy(), k, pad_value=255)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png_bytes(upscale(grid, args.scale)))
    threshold = cfg.metrics.get("memorization_threshold")
    print(f"wrote {out}: {k * args.per_class} samples of {cfg.name}; memorisation threshold "
          f"{threshold if threshold is not None else 'not measured'}\n")
    print("| class | seed | distance to nearest training image |")
    print("| --- | ---: | ---: |")
    for i in range(len(labels)):
        print(f"| {cfg.class_names[labels[i]]} | {args.seed + i} | {dist[i]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
