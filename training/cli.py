"""``python -m training {train,sample,evaluate,…}``: thin commands over the package.

Bad options are argparse errors that name the flag (exit 2); dataset and checkpoint
problems are one-line errors (exit 2), never tracebacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic.fields import FieldInfo

from training.argtypes import int_range
from training.devices import device_available
from training.options import (
    GROUPS,
    ConfigError,
    TrainOptions,
    check_dataset,
    check_diffaugment,
    check_environment,
    check_family,
    flag,
)
from training.recipes import recipe_names, resolve

log = logging.getLogger("training")


def _float_range(lo: float, hi: float, lo_open: bool = False) -> Callable[[str], float]:
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
        if not (lo < v if lo_open else lo <= v) or not v <= hi:
            raise argparse.ArgumentTypeError(f"must be in {'(' if lo_open else '['}{lo}, {hi}], got {v}")
        return v

    return parse


def _classes(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class indices like 0,1,2, got {s!r}") from None


def _int_list(s: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 2,5,10, got {s!r}") from None
    if any(v < 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative integers, got {s!r}")
    return values


def _checked(check: Callable[[str], str]) -> Callable[[str], str]:
    """An argparse type from one of training/options.py's checks (the same rule for the CLI and Python)."""
    def parse(s: str) -> str:
        try:
            return check(s)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def _bounds(f: FieldInfo) -> tuple[float | None, float | None, bool]:
    """(low, high, low is open) of a field's range."""
    lo: Any = None
    hi: Any = None
    lo_open = False
    for m in f.metadata:
        if isinstance(m, annotated_types.Ge):
            lo = m.ge
        elif isinstance(m, annotated_types.Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, annotated_types.Le):
            hi = m.le
    return lo, hi, lo_open


def add_train_options(t: argparse.ArgumentParser) -> None:
    """The ``train`` flags, one per TrainOptions field (training/options.py), in --help groups by family.
    Every default is argparse.SUPPRESS: only the flags given reach the options, over the --recipe's."""
    groups = {key: t.add_argument_group(title) for key, title in GROUPS.items()}
    groups["run"].add_argument("--recipe", metavar="NAME", default=None,
                               help="start from a named set of options (training/recipes/; `python -m training "
                                    "recipes` lists them); the flags given override it")
    checks = {"family": check_family, "dataset": check_dataset, "diffaugment": check_diffaugment}
    for name, f in TrainOptions.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if "group" not in extra:
            continue  # (command: recorded, not given)
        default = f.default
        text = (f.description or "") + ("" if f.is_required() or default in ("", None) or f.annotation is bool
                                        else f" (default: {default})")
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": text.strip() or None}
        if extra.get("metavar"):
            kw["metavar"] = extra["metavar"]
        group = groups[str(extra["group"])]
        if f.annotation is bool:
            negated = default is True  # --no-tensorboard, --no-progress
            if negated:
                kw["help"] = f"without: {f.description}"
            group.add_argument(f"--no-{name.replace('_', '-')}" if negated else flag(name),
                               action="store_false" if negated else "store_true", **kw)
            continue
        literals = typing.get_args(f.annotation) if typing.get_origin(f.annotation) is Literal else ()
        if literals:
            kw["choices"], kw["type"] = [v for v in literals if v != ""], type(literals[0])
        elif name in checks:
            kw["type"] = _checked(checks[name])
        elif name == "classes":
            kw["type"] = _classes
        elif f.annotation is int:
            lo, hi, _ = _bounds(f)
            kw["type"] = int_range(int(lo or 0), None if hi is None else int(hi))
        elif f.annotation is float:
            lo, hi, lo_open = _bounds(f)
            kw["type"] = _float_range(lo or 0.0, hi if hi is not None else float("inf"), lo_open)
        group.add_argument(flag(name), **kw)
    t.add_argument("--dry-run", action="store_true", help="print the resolved options and exit")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a generator and write a checkpoint folder",
                       description="Train a generator and write a checkpoint folder. Each option is the flag "
                                   "given, else the --recipe's value, else the default (docs/training.md).")
    add_train_options(t)

    s = sub.add_parser("sample", help="render images from a checkpoint through load_generator")
    s.add_argument("checkpoint", help="checkpoint folder")
    s.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0)
    s.add_argument("--label", default=None, help="class index or name (conditional models)")
    s.add_argument("--n", type=int_range(1, 1024), default=1)
    s.add_argument("--nrow", type=int_range(1, 1024), default=8)
    s.add_argument("--truncation", type=_float_range(0, 1, lo_open=True), default=None, metavar="PSI",
                   help="z scaled by PSI in (0, 1] (default: the checkpoint's own `truncation`, as the service has it)")
    s.add_argument("--scale", type=int_range(1, 8), default=1)
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", required=True, help="PNG file to write")

    sub.add_parser("families", help="list the registered model families")
    sub.add_parser("recipes", help="list the recipes (named sets of training options) --recipe takes")

    x = sub.add_parser("experiments", help="re-run the seed articles' experiments and write docs/experiments.md",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    x.add_argument("names", nargs="*", default=["upsampling", "conditioning"],
                   help="experiments to run: upsampling, conditioning, upsampling-emoji")
    x.add_argument("--points", type=_int_list, default=(2, 5, 10), help="epochs at which runs are measured")
    x.add_argument("--seeds", type=_int_list, default=(0, 1, 2), help="training seeds per variant")
    x.add_argument("--seeds-for", action="append", default=[], metavar="NAME=SEEDS",
                   help="other seeds for one experiment, e.g. conditioning=0 (repeatable)")
    x.add_argument("--samples", type=int_range(100, 100_000), default=10_000, help="generated images per measurement")
    x.add_argument("--work", default="runs/experiments", help="run folders and results.json (resumable)")
    x.add_argument("--out", default="docs/experiments.md")
    x.add_argument("--checkpoints", default="checkpoints",
                   help="shipped checkpoints whose evaluation histories are shown as the long runs of a comparison")
    x.add_argument("--data-dir", default=None)
    x.add_argument("--threads", type=int_range(0, 1024), default=0)
    x.add_argument("--width", type=int_range(8, 512), default=64, help="ngf = ndf of every run")
    x.add_argument("--max-steps-per-epoch", type=int_range(0), default=0, help="cut epochs short (smoke tests)")

    from training.evaluation import cli as evaluation_cli

    evaluation_cli.add_commands(sub)
    return p


def _command_line(argv: Sequence[str]) -> str:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = f"torchrun --nproc_per_node={world} -m training" if world > 1 else "python -m training"
    return f"{launcher} {shlex.join(argv)}"


def cmd_train(args: argparse.Namespace, argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    given = {k: v for k, v in vars(args).items() if k in TrainOptions.model_fields and k != "command"}
    try:
        opts = resolve(args.recipe, **given, command=_command_line(argv))
        check_environment(opts)
    except ConfigError as e:
        parser.error(str(e))
    if opts.dataset in ("mnist", "fashion-mnist") and opts.channels == 3:
        log.info("grey dataset with --channels 3: images are repeated over RGB")
    if args.dry_run:
        print(json.dumps(opts.to_json(), indent=2))
        return 0
    from training.data import DatasetError
    from training.loop import train

    previous = _stop_on_sigterm()
    try:
        train(opts)
    except DatasetError as e:
        print(f"error: --dataset: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        return 143
    except KeyboardInterrupt:
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop as Ctrl-C does."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def _stop_on_sigterm() -> Any:
    """Make SIGTERM — what `kill`, a container runtime, Slurm or torchrun send to stop a job — end a
    training like Ctrl-C: the resume state is saved. (A job started with `nohup … &` from a script
    ignores SIGINT, so SIGTERM is its only clean stop.) → the previous handler, to put back."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from training.checkpoint import CheckpointError, load_generator
    from training.images import make_grid, png_bytes, to_uint8, upscale
    from training.labels import UnknownLabel, parse_label
    from training.latent import grid_seeds, latents

    if not device_available(args.device):
        print(f"error: --device {args.device!r} is not available here", file=sys.stderr)
        return 2
    try:
        g, cfg = load_generator(args.checkpoint, args.device)
    except CheckpointError as e:
        print(f"error: checkpoint: {e}", file=sys.stderr)
        return 2
    if cfg.input is not None:
        print(f"error: {cfg.name} is a translator ({cfg.family}): it turns {cfg.input.transform} images into images "
              "(the service's POST /models/{model}/translate), it cannot be sampled", file=sys.stderr)
        return 2
    if not cfg.sampleable:
        print(f"error: {cfg.name} is a {cfg.family} (reconstruction only): it cannot be sampled", file=sys.stderr)
        return 2
    try:
        if args.label is not None and not cfg.conditional:
            raise UnknownLabel(f"{cfg.name} is unconditional: drop --label")
        label = parse_label(args.label, cfg.class_names, cfg.name) if args.label is not None else None
    except UnknownLabel as e:
        print(f"error: --label: {e}", file=sys.stderr)
        return 2
    try:
        seeds = grid_seeds(args.seed, args.n)
    except ValueError as e:
        print(f"error: --seed/--n: {e}", file=sys.stderr)
        return 2
    if cfg.conditional and label is None:
        label = 0
    psi = cfg.truncation if args.truncation is None else args.truncation
    z = latents(seeds, cfg.z_dim, psi).to(args.device)
    y = torch.full((len(seeds),), label, dtype=torch.long, device=args.device) if label is not None else None
    with torch.inference_mode():
        imgs = to_uint8(g(z, y))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png_bytes(upscale(make_grid(imgs, args.nrow) if len(seeds) > 1 else imgs[0], args.scale)))
    print(f"wrote {out} ({len(seeds)} image(s), seeds {seeds[0]}..{seeds[-1]}"
          + (f", label {label} = {cfg.class_names[label]}" if label is not None else "") + ")")
    return 0


def cmd_experiments(args: argparse.Namespace, argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    from training.experiments import EXPERIMENTS, Plan, main

    unknown = [n for n in args.names if n not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    if 0 in args.points:
        parser.error("--points: epochs start at 1")
    seeds_for: dict[str, tuple[int, ...]] = {}
    for item in args.seeds_for:
        name, sep, seeds = item.partition("=")
        if not sep or name not in EXPERIMENTS:
            parser.error(f"--seeds-for: expected NAME=SEEDS with NAME one of {', '.join(EXPERIMENTS)}, got {item!r}")
        try:
            seeds_for[name] = tuple(_int_list(seeds))
        except argparse.ArgumentTypeError as e:
            parser.error(f"--seeds-for {name}: {e}")
    plan = Plan(tuple(args.names), tuple(sorted(args.points)), tuple(args.seeds), args.samples, Path(args.work),
                Path(args.out), data_dir=args.data_dir, max_steps_per_epoch=args.max_steps_per_epoch,
                threads=args.threads, width=args.width, seeds_for=seeds_for, checkpoints=Path(args.checkpoints))
    out = main(plan, _command_line(argv))
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        if int(os.environ.get("RANK", "0")) != 0:
            logging.getLogger().setLevel(logging.WARNING)
        return cmd_train(args, argv, parser)
    if args.command == "sample":
        return cmd_sample(args)
    if args.command == "experiments":
        return cmd_experiments(args, argv, parser)
    if args.command == "families":
        from training.models import family_names, get_family

        for name in family_names():
            f = get_family(name)
            print(f"{name:10s} {f.description}")
        return 0
    if args.command == "recipes":
        from training.recipes import load_recipe

        for name in recipe_names():
            print(f"{name:24s} {load_recipe(name).description}")
        return 0
    from training.evaluation import cli as evaluation_cli

    if args.command in evaluation_cli.COMMANDS:
        return evaluation_cli.run(args, parser)
    parser.error(f"unknown command {args.command}")
    return 2
