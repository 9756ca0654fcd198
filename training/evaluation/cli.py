"""Commands of the evaluation half: wired into ``python -m training`` by training/cli.py.

``train-evaluator`` trains and ships the evaluator CNN of a dataset;
``evaluate`` measures a generator checkpoint with it and writes the numbers into the
checkpoint's config.json; ``evaluate-encoding`` measures the image-in side (reconstruction by an
encoder, or projection) on held-out test images (``training/evaluation/reconstruction.py``).
Problems with a dataset, checkpoint or evaluator are one-line errors (exit 2), never tracebacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.argtypes import int_range
from training.devices import device_available

COMMANDS: tuple[str, ...] = ("bars", "train-evaluator", "evaluate", "evaluate-encoding")
EVALUATOR_DATASETS = ("fashion-mnist", "mnist", "emoji", "synthetic")
# Defaults per dataset: the 4.5k-image MNIST subset needs more epochs and stronger augmentation.
EPOCHS = {"fashion-mnist": 15, "mnist": 40, "emoji": 40, "synthetic": 10}
AUGMENT = {"fashion-mnist": "shift", "mnist": "affine", "emoji": "affine", "synthetic": "shift"}
# (resolution, channels) an evaluator sees: the grey sets at 28×28; emoji in colour at its native 64×64
# (its categories are told apart by colour as much as by shape).
GEOMETRY = {"fashion-mnist": (28, 1), "mnist": (28, 1), "emoji": (64, 3), "synthetic": (28, 1)}
# The background shifted-in pixels of the augmentation take: white for emoji, black otherwise.
FILL = {"emoji": 1.0}

log = logging.getLogger("training.evaluation")


def _in_0_1(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {v}")
    return v


def add_commands(sub: Any) -> None:
    """Add this module's subcommands to the ``python -m training`` parser."""
    t = sub.add_parser("train-evaluator", help="train the evaluator CNN of a dataset (for FID, accuracy, …)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--dataset", choices=EVALUATOR_DATASETS, required=True)
    t.add_argument("--out", default=None, help="evaluator folder (default: checkpoints/evaluators/DATASET)")
    t.add_argument("--epochs", type=int_range(1, 10_000), default=None,
                   help=f"default per dataset: {EPOCHS}")
    t.add_argument("--batch-size", type=int_range(2, 65_536), default=128)
    t.add_argument("--lr", type=_in_0_1, default=2e-3, help="peak learning rate of the one-cycle schedule")
    t.add_argument("--augment", choices=("none", "shift", "affine"), default=None,
                   help=f"default per dataset: {AUGMENT}")
    t.add_argument("--width", type=int_range(1, 512), default=32, help="channels of the first conv stage")
    t.add_argument("--feature-dim", type=int_range(2, 4096), default=128, help="width of the feature layer")
    t.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0)
    t.add_argument("--threads", type=int_range(0, 1024), default=2, help="torch CPU threads (0: torch's default)")
    t.add_argument("--data-dir", default=None, help="folder with IDX files (mnist, fashion-mnist) or the emoji images")

    e = sub.add_parser("evaluate", help="measure a checkpoint with its dataset's evaluator; writes config.json metrics",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("checkpoint", help="checkpoint folder")
    e.add_argument("--samples", type=int_range(10, 1_000_000), default=10_000,
                   help="generated images (seeds SEED..SEED+N-1; labels cycled over the classes); translators: "
                        "held-out pairs (the whole test split when it has no more)")
    e.add_argument("--batch-size", type=int_range(1, 65_536), default=500,
                   help="images per generator / evaluator forward pass")
    e.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="first seed of the samples")
    e.add_argument("--evaluators", default=None,
                   help="folder of evaluators (default: $GANSERVE_EVALUATORS, else checkpoints/evaluators)")
    e.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps")
    e.add_argument("--threads", type=int_range(0, 1024), default=2, help="torch CPU threads (0: torch's default)")
    e.add_argument("--kid-subsets", type=int_range(1, 10_000), default=100, help="random subsets KID averages over")
    e.add_argument("--truncation", type=_in_0_1, default=None, metavar="PSI",
                   help="sample with z scaled by PSI in (0, 1] (default: the checkpoint's own `truncation`, 1 unless "
                        "set); written with the metrics, PSI becomes the checkpoint's default, what the service and "
                        "`sample` use when a request names none, so its metrics always describe what it serves")
    e.add_argument("--baseline", default=None, metavar="CHECKPOINT",
                   help="translators: also measure this translator of the same input and dataset (e.g. the L1-only "
                        "baseline) on the same held-out pairs; its numbers go into the metrics as `baseline`")
    e.add_argument("--no-write", action="store_true", help="print the metrics without touching config.json")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")

    r = sub.add_parser("evaluate-encoding", help="measure reconstruction (encoder) or projection on held-out test "
                       "images; writes config.json metrics", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("checkpoint", help="checkpoint folder (with an encoder, or a GAN generator to project into)")
    r.add_argument("--images", type=int_range(1, 1_000_000), default=200,
                   help="test images encoded and judged by the evaluator (a seeded pick)")
    r.add_argument("--steps", type=int_range(0, 10_000), default=100,
                   help="Adam steps of each projection (GAN generators; the service's GANSERVE_PROJECTION_STEPS)")
    r.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="seed of the pick of test images")
    r.add_argument("--batch-size", type=int_range(1, 65_536), default=500)
    r.add_argument("--evaluators", default=None,
                   help="folder of evaluators (default: $GANSERVE_EVALUATORS, else checkpoints/evaluators)")
    r.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps")
    r.add_argument("--threads", type=int_range(0, 1024), default=1,
                   help="torch CPU threads (0: torch's default; 1 makes projection deterministic)")
    r.add_argument("--no-write", action="store_true", help="print the metrics without touching config.json")

    b = sub.add_parser("bars", help="markdown table: each checkpoint's training time, key metrics and quality bars")
    b.add_argument("folder", nargs="?", default="checkpoints", help="folder of checkpoint folders")
    b.add_argument("--write", default=None, metavar="MARKDOWN",
                   help="also replace the table between <!-- bars:start --> and <!-- bars:end --> in this file")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "train-evaluator":
        return cmd_train_evaluator(args)
    if args.command == "evaluate":
        return cmd_evaluate(args)
    if args.command == "evaluate-encoding":
        return cmd_evaluate_encoding(args)
    if args.command == "bars":
        from training.evaluation.bars import table

        if not Path(args.folder).is_dir():
            print(f"error: {args.folder}: not a folder of checkpoints", file=sys.stderr)
            return 2
        md = table(args.folder)
        print(md)
        if args.write:
            from training.evaluation.bars import write_between_markers

            try:
                write_between_markers(Path(args.write), md)
            except ValueError as e:
                print(f"error: --write: {e}", file=sys.stderr)
                return 2
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


def _set_threads(n: int) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def cmd_train_evaluator(args: argparse.Namespace) -> int:
    from training.data import DatasetError, load_dataset
    from training.evaluation.evaluator import CONFIG, accuracy, save_evaluator, train_evaluator

    _set_threads(args.threads)
    epochs = args.epochs or EPOCHS[args.dataset]
    aug = args.augment or AUGMENT[args.dataset]
    out = Path(args.out or Path("checkpoints") / "evaluators" / args.dataset)
    # The command that reproduces this evaluator, every option spelled out.
    command = "python -m training train-evaluator " + shlex.join([
        "--dataset", args.dataset, "--out", str(out), "--epochs", str(epochs), "--batch-size", str(args.batch_size),
        "--lr", str(args.lr), "--augment", aug, "--width", str(args.width), "--feature-dim", str(args.feature_dim),
        "--seed", str(args.seed), "--threads", str(args.threads),
        *(["--data-dir", args.data_dir] if args.data_dir else []),
    ])
    res, ch = GEOMETRY[args.dataset]
    try:
        train = load_dataset(args.dataset, "train", res, ch, args.data_dir)
        test = load_dataset(args.dataset, "test", res, ch, args.data_dir)
    except DatasetError as e:
        print(f"error: --dataset: {e}", file=sys.stderr)
        return 2
    log.info("training the %s evaluator on %d images (%d epochs, augment %s); test set %d images",
             args.dataset, len(train), epochs, aug, len(test))
    arch = {"width": args.width, "feature_dim": args.feature_dim}
    t0 = time.perf_counter()
    net = train_evaluator(train.images, train.labels, len(train.class_names), epochs=epochs,
                          batch_size=args.batch_size, lr=args.lr, augment_kind=aug, seed=args.seed, arch=arch, log=log,
                          fill=FILL.get(args.dataset, -1.0))
    seconds = round(time.perf_counter() - t0, 1)
    acc, per = accuracy(net, test.images, test.labels)
    cfg = save_evaluator(out, net, {
        "dataset": args.dataset,
        "class_names": train.class_names,
        "architecture": {"class": "EvaluatorNet", "kwargs": {
            "channels": ch, "resolution": res, "num_classes": len(train.class_names), **arch, "dropout": 0.3}},
        "channels": ch,
        "resolution": res,
        "feature_dim": args.feature_dim,
        "test_accuracy": round(acc, 6),
        "test_accuracy_per_class": {n: round(float(a), 6) for n, a in zip(train.class_names, per, strict=True)},
        "num_test": len(test),
        "training": {"command": command, "epochs": epochs, "seconds": seconds, "seed": args.seed,
                     "batch_size": args.batch_size, "lr": args.lr, "augment": aug, "threads": args.threads,
                     "num_train": len(train)},
    })
    print(f"wrote {out / CONFIG}: test accuracy {acc:.4f} on {len(test)} held-out images "
          f"({seconds:.0f} s, weights sha256 {cfg.weights_sha256[:12]}…)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.checkpoint import CheckpointError, read_config
    from training.data import DatasetError
    from training.evaluation.evaluate import EvaluationError, evaluate_checkpoint, format_table

    _set_threads(args.threads)
    if not device_available(args.device):
        print(f"error: --device {args.device!r} is not available here (cpu, cuda[:N], mps)", file=sys.stderr)
        return 2
    try:
        translator = read_config(args.checkpoint).translator
    except CheckpointError as e:
        print(f"error: checkpoint: {e}", file=sys.stderr)
        return 2
    if translator:
        return _evaluate_translator(args)
    if args.baseline is not None:
        print(f"error: --baseline: {args.checkpoint} is not a translator; --baseline measures translators only",
              file=sys.stderr)
        return 2
    return _measure_and_write(
        args, lambda: evaluate_checkpoint(
            args.checkpoint, num_samples=args.samples, batch_size=args.batch_size, seed=args.seed,
            evaluator_root=args.evaluators, device=args.device, log=log,
            kid_subsets=args.kid_subsets, truncation=args.truncation),
        (EvaluationError, DatasetError), format_table)


def _evaluate_translator(args: argparse.Namespace) -> int:
    """``evaluate`` of a translator: held-out pairs (training/evaluation/translation.py)."""
    from training.data import DatasetError
    from training.evaluation.translation import TranslationError, evaluate_translator, format_table

    if args.truncation is not None:
        print(f"error: --truncation: {args.checkpoint} is a translator: it has no latent to truncate", file=sys.stderr)
        return 2
    return _measure_and_write(
        args, lambda: evaluate_translator(
            args.checkpoint, num_pairs=args.samples, batch_size=args.batch_size, seed=args.seed,
            evaluator_root=args.evaluators, device=args.device, log=log, baseline=args.baseline),
        (TranslationError, DatasetError), format_table,
        checkpoint_label=lambda e: "--baseline" if args.baseline and str(args.baseline) in str(e) else "checkpoint")


def cmd_evaluate_encoding(args: argparse.Namespace) -> int:
    from training.data import DatasetError
    from training.evaluation.reconstruction import EncodingError, evaluate_encoding

    _set_threads(args.threads)
    if not device_available(args.device):
        print(f"error: --device {args.device!r} is not available here (cpu, cuda[:N], mps)", file=sys.stderr)
        return 2
    return _measure_and_write(
        args, lambda: evaluate_encoding(args.checkpoint, args.images, args.steps, args.batch_size,
                                        args.seed, args.evaluators, args.device, log),
        (EncodingError, DatasetError), lambda m: json.dumps(m, indent=2))


def _measure_and_write(args: argparse.Namespace,
                       measure: Callable[[], tuple[dict[str, Any], str]],
                       errors: tuple[type[Exception], ...],
                       format_table: Callable[[dict[str, Any]], str],
                       checkpoint_label: Callable[[Exception], str] = lambda e: "checkpoint") -> int:
    """Run one of evaluate's measurements, print it (``--json`` or a table) and, unless ``--no-write``,
    write it into the checkpoint's config.json; every failure is one ``error: …`` line and exit 2."""
    from training.checkpoint import CheckpointError, update_metrics
    from training.evaluation.evaluator import EvaluatorError

    try:
        metrics, evaluator_sha = measure()
    except CheckpointError as e:
        print(f"error: {checkpoint_label(e)}: {e}", file=sys.stderr)
        return 2
    except EvaluatorError as e:
        print(f"error: evaluator: {e}", file=sys.stderr)
        return 2
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2) if getattr(args, "json", False) else format_table(metrics))
    if not args.no_write:
        try:
            update_metrics(args.checkpoint, metrics, evaluator_sha)
        except (CheckpointError, OSError) as e:
            print(f"error: writing metrics: {e}", file=sys.stderr)
            return 2
        print(f"wrote metrics into {Path(args.checkpoint) / 'config.json'}")
    return 0
