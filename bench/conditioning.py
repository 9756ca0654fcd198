"""Benchmark of the label-concatenating discriminator: concatenated input vs factored first conv.

    python bench/conditioning.py           # the full run (~3 min on an idle 2-core machine): writes the table
    python bench/conditioning.py --quick   # a smoke run (seconds): prints the table only

A cGAN's D (and a self-conditioned GAN's, whose "labels" are K clusters) reads the label as K
constant one-hot maps joined to the image channels. Concatenated, they make D's first conv
(C + K)/C times the work; ``DCDiscriminator`` computes their part once per class instead
(``factored_concat``, the same function and weights). Both ways run here in the same process on
the real ``training.loop.Trainer`` step (D and G updates, EMA) at the recipes' batch of 128,
28×28 grey, with repetitions interleaved so that drift of the machine hits both alike:

* ``cgan`` — 10 classes (``fashion-cgan``, ``mnist-cgan``);
* ``dcgan --latent-categories K --self-condition`` — K = 20 (the shipped ``fashion-dcgan``) and 50.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.common import command_line, machine_lines, markdown_table, median, publish, random_trainer, spread, step_rate

BATCH = 128


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    categories: int  # 0: the family's own 10 classes


CASES = [Case("cgan, 10 classes", "cgan", 0), Case("self-conditioned dcgan, K = 20", "dcgan", 20),
         Case("self-conditioned dcgan, K = 50", "dcgan", 50)]


def make_trainer(case: Case, factored: bool) -> tuple[object, torch.Tensor, torch.Tensor]:
    extra = {"latent_categories": case.categories, "self_condition": True} if case.categories else {}
    trainer, x, y = random_trainer(case.family, BATCH, threads=0, **extra)
    d = trainer.d_raw
    assert getattr(d, "cond", None) == "concat", f"{case.name}: D is not label-concatenating"
    d.factored_concat = factored
    return trainer, x, y


def images_per_second(case: Case, factored: bool, warmup: int, seconds: float, min_steps: int) -> float:
    return step_rate(*make_trainer(case, factored), warmup, seconds, min_steps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per variant and repetition")
    p.add_argument("--reps", type=int, default=3, help="repetitions (interleaved)")
    p.add_argument("--quick", action="store_true", help="smoke run: one repetition of a few steps")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                   help="write the table into docs/performance.md (default: yes, except with --quick)")
    args = p.parse_args(argv)
    warmup, min_steps = (1, 2) if args.quick else (3, 10)
    if args.quick:
        args.seconds, args.reps = 0.0, 1
    header = machine_lines("cpu")
    results: dict[tuple[str, bool], list[float]] = {}
    for rep in range(args.reps):
        for case in CASES:
            for factored in (False, True):
                r = images_per_second(case, factored, warmup, args.seconds, min_steps)
                results.setdefault((case.name, factored), []).append(r)
                print(f"rep {rep + 1}/{args.reps} {case.name:32s} {'factored' if factored else 'concatenated':12s} "
                      f"{r:7.0f} images/s", flush=True)
    rows = []
    for case in CASES:
        plain, fast = results[(case.name, False)], results[(case.name, True)]
        rows.append([case.name, spread(plain), spread(fast), f"{median(fast) / median(plain):.2f}×"])
    text = "\n".join([
        f"Command: `{command_line()}` — `Trainer.step` at batch {BATCH}, 28×28×1, CPU, torch's default threads; "
        f"{args.seconds:g} s per variant, {args.reps} repetition(s), interleaved; images/s as median (min–max).",
        "",
        *header,
        "",
        markdown_table(["D conditioned on", "concatenated input images/s", "factored first conv images/s",
                        "speed-up"], rows),
    ])
    publish("conditioning", text, args.write, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
