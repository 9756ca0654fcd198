"""Training-step benchmark: images/s of each family's training step, the plain way vs tuned.

    python bench/training.py            # the full run (~12 min on a busy 2-core machine): writes the table
    python bench/training.py --quick    # a smoke run (seconds): prints the table only
    python bench/training.py --emoji    # the emoji-cgan step: 64×64 RGB, 9 classes, DiffAugment, width 32

Every variant runs the real ``training.loop.Trainer`` step (D and G updates, EMA) on
random 28×28 grey batches of 64 with 10 classes, the shape of the shipped MNIST models:

* **reference** — the plain loop: ``.item()`` on every loss after every step (one sync per
  step, as a loop printing its losses does), torch's default thread count, no channels-last;
* **tuned** variants — the losses stay tensors (the loop syncs once per ``log_every`` steps),
  with 1 or 2 torch threads, and channels-last memory format for the convolutional families.

``--emoji`` times the step of the shipped ``emoji-cgan`` instead (cGAN, 64×64 RGB batches of 64,
9 classes, width 32, DiffAugment color,translation,cutout) and writes its own section.

Repetitions interleave the variants so that drift of the machine hits all alike.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.common import command_line, machine_lines, markdown_table, median, publish, random_trainer, spread, step_rate

BATCH = 64
CONV_FAMILIES = {"dcgan", "cgan", "acgan", "wgan-gp", "conv-ae"}


@dataclass(frozen=True)
class Variant:
    name: str
    threads: int  # 0: torch's default
    channels_last: bool
    sync_every_step: bool


REFERENCE = Variant("reference", 0, False, True)


def variants(family: str, quick: bool) -> list[Variant]:
    tuned = [Variant(f"{t} thread{'s' if t > 1 else ''}{', channels-last' if cl else ''}", t, cl, False)
             for t in (1, 2) for cl in (False, True) if not cl or family in CONV_FAMILIES]
    if quick:
        tuned = tuned[:1]
    return [REFERENCE, *tuned]


# The emoji-cgan recipe's step (bench/training.py --emoji).
EMOJI = {"resolution": 64, "channels": 3, "num_classes": 9, "width": 32, "diffaugment": "color,translation,cutout"}


def make_trainer(family: str, v: Variant, shape: dict[str, Any] | None = None,
                 ) -> tuple[object, torch.Tensor, torch.Tensor]:
    trainer, x, y = random_trainer(family, BATCH, channels_last=v.channels_last, threads=v.threads, **(shape or {}))
    if v.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return trainer, x, y


def images_per_second(family: str, v: Variant, warmup: int, seconds: float, min_steps: int,
                      shape: dict[str, Any] | None = None) -> float:
    default = torch.get_num_threads()
    torch.set_num_threads(v.threads or default)
    try:
        return step_rate(*make_trainer(family, v, shape), warmup, seconds, min_steps, v.sync_every_step)
    finally:
        torch.set_num_threads(default)


def main(argv: list[str] | None = None) -> int:
    from training.models import family_names

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default=None, help="comma-separated families (default: all; --quick: mlp-gan,cgan)")
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per variant and repetition")
    p.add_argument("--reps", type=int, default=3, help="repetitions (interleaved)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: two families, a few steps, reference + one tuned variant")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                   help="write the table into docs/performance.md (default: yes, except with --quick)")
    p.add_argument("--emoji", action="store_true",
                   help="the emoji-cgan step (cgan, 64×64 RGB, 9 classes, width 32, DiffAugment) instead; "
                        "its own section of docs/performance.md")
    args = p.parse_args(argv)
    if args.emoji and args.families not in (None, "cgan"):
        p.error("--emoji times the cgan step only: drop --families")
    shape = EMOJI if args.emoji else None
    families = (args.families or ("cgan" if args.emoji else "mlp-gan,cgan" if args.quick
                                  else ",".join(family_names()))).split(",")
    warmup, min_steps = (1, 2) if args.quick else (5, 10)
    if args.quick:
        args.seconds, args.reps = 0.0, 1
    header = machine_lines("cpu")
    results: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.reps):
        for fam in families:
            for v in variants(fam, args.quick):
                r = images_per_second(fam, v, warmup, args.seconds, min_steps, shape)
                results.setdefault((fam, v.name), []).append(r)
                print(f"rep {rep + 1}/{args.reps} {fam:8s} {v.name:28s} {r:8.0f} images/s", flush=True)

    rows = []
    for fam in families:
        ref = results[(fam, REFERENCE.name)]
        tuned = {v.name: results[(fam, v.name)] for v in variants(fam, args.quick) if v is not REFERENCE}
        best = max(tuned, key=lambda k: median(tuned[k]))
        rows.append([fam, spread(ref), spread(tuned[best]), best, f"{median(tuned[best]) / median(ref):.2f}×",
                     "; ".join(f"{k}: {median(vals):.0f}" for k, vals in tuned.items())])
    what = ("64×64×3, 9 classes, width 32, DiffAugment color,translation,cutout" if args.emoji
            else "28×28×1, 10 classes")
    text = "\n".join([
        f"Command: `{command_line()}` — batch {BATCH}, {what}, CPU; {args.seconds:g} s per variant, "
        f"{args.reps} repetition(s), interleaved; images/s as median (min–max).",
        "",
        *header,
        "",
        markdown_table(["family", "reference images/s", "best tuned images/s", "best tuned variant", "speed-up",
                        "all tuned variants (median images/s)"], rows),
    ])
    publish("training-emoji" if args.emoji else "training", text, args.write, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
