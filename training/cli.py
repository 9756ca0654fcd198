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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from training.argtypes import int_range
from training.config import KEEP_BEST, ConfigError, TrainConfig
from training.devices import device_available
from training.models.common import RESOLUTIONS

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


def _family(s: str) -> str:
    from training.models import family_names

    if s not in family_names():
        raise argparse.ArgumentTypeError(f"unknown family {s!r}; choose one of {', '.join(family_names())}")
    return s


def _diffaugment(s: str) -> str:
    from training.augment import parse_policy

    try:
        return ",".join(parse_policy(s))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _dataset(s: str) -> str:
    from training.data import DATASETS

    if s in ("fashion-mnist", "mnist", "emoji", "synthetic") or (s.startswith("folder:") and len(s) > 7):
        return s
    raise argparse.ArgumentTypeError(f"unknown dataset {s!r}; choose one of {', '.join(DATASETS)}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a generator and write a checkpoint folder",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = TrainConfig.__dataclass_fields__
    t.add_argument("--family", type=_family, required=True, help="model family (see `python -m training families`)")
    t.add_argument("--dataset", type=_dataset, required=True,
                   help="fashion-mnist | mnist | emoji | synthetic | folder:PATH")
    t.add_argument("--out", required=True, help="checkpoint folder to write, e.g. checkpoints/my-model")
    t.add_argument("--epochs", type=int_range(1, 100_000), default=d["epochs"].default)
    t.add_argument("--name", default="", help="model name (default: the --out folder's name)")
    t.add_argument("--run-dir", default="", help="where resume state, grids and TensorBoard logs go "
                                                "(default: runs/NAME)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's resume state")
    t.add_argument("--data-dir", default=None, help="folder with IDX files (mnist, fashion-mnist) or the emoji images "
                                                        "(default for emoji: $GANSERVE_DATA/emoji, else "
                                                        "~/.cache/ganserve/emoji)")
    t.add_argument("--classes", type=_classes, default=None, help="train on a subset of class indices, e.g. 0,1,2,3,4")
    t.add_argument("--synthetic-size", type=int_range(6, 1_000_000), default=d["synthetic_size"].default)
    t.add_argument("--resolution", type=int, choices=RESOLUTIONS, default=d["resolution"].default)
    t.add_argument("--channels", type=int, choices=(1, 3), default=d["channels"].default)
    t.add_argument("--z-dim", type=int_range(1, 4096), default=d["z_dim"].default)
    t.add_argument("--width", type=int_range(1, 1024), default=d["width"].default, help="ngf = ndf")
    t.add_argument("--upsample", choices=("convT", "nearest-conv"), default=d["upsample"].default)
    t.add_argument("--bn", choices=("before-act", "after-act"), default=d["bn"].default)
    t.add_argument("--minibatch-std", action="store_true",
                   help="D gets the batch's mean feature standard deviation as one more input channel of its last "
                        "layer (ProGAN): a batch of too-similar fakes is easy to spot (dcgan, cgan, acgan, wgan-gp)")
    t.add_argument("--spectral-norm", action="store_true",
                   help="spectral normalisation of every layer of D in place of its batch-/layer-norm (SNGAN); "
                        "usually with --loss hinge (dcgan, cgan, acgan, wgan-gp)")
    t.add_argument("--r1-gamma", type=_float_range(0, 1e4), default=d["r1_gamma"].default,
                   help="R1 penalty: D's loss gets γ/2 × the mean squared norm of its gradient at real images, so it "
                        "cannot win by walling the data off (Mescheder et al. 2018; gan and acgan objectives: dcgan, "
                        "cgan, acgan, mlp-gan)")
    t.add_argument("--latent-categories", metavar="K", type=int_range(0, 4096), default=d["latent_categories"].default,
                   help="InfoGAN (Chen et al. 2016): the generator reads a K-way categorical code from its latent "
                        "(the largest of z's first K entries, one-hot; uniform over K for z ~ N(0, I), so a seed "
                        "still fixes the image) and D gets a second head, Q, trained with G to recover the code "
                        "from the image — an unlabelled way to give G discrete modes to jump between (dcgan, "
                        "wgan-gp; 2 ≤ K ≤ --z-dim)")
    t.add_argument("--info-weight", type=_float_range(0, 100), default=d["info_weight"].default,
                   help="InfoGAN: weight λ of the code's cross-entropy in D's and G's losses (with "
                        "--latent-categories)")
    t.add_argument("--self-condition", action="store_true",
                   help="with --latent-categories K: a self-conditioned GAN (Liu et al. 2020) instead of InfoGAN's "
                        "Q head — the training images are cut into K equal k-means clusters (pixel PCA) and D "
                        "judges each real image with its cluster and each generated one with its code, as a cGAN's "
                        "D judges image and label; G stays unconditional to its users (dcgan; wgan-gp, whose "
                        "critic then judges each fake with the cluster of the real image it is paired with in the "
                        "gradient penalty: the fake's code is drawn to match)")
    t.add_argument("--recluster-every", metavar="N", type=int_range(0, 100_000),
                   default=d["recluster_every"].default,
                   help="with --self-condition: every N epochs the training images are clustered again, by "
                        "k-means on D's features started from the current clusters (so each keeps its code), as "
                        "the paper does; D then takes the label by projection, so its features do not see it "
                        "(default 0: the pixel clusters stay)")
    t.add_argument("--diffaugment", metavar="POLICY", type=_diffaugment, default=d["diffaugment"].default,
                   help="differentiable augmentation (DiffAugment): the same kinds of random transforms of real "
                        "and generated images, in D's step and in G's, so a discriminator cannot learn a small "
                        "dataset by heart; a comma-separated list of color, translation, cutout (the paper's "
                        "choice for little data: all three); every family with a discriminator")
    t.add_argument("--batch-size", type=int_range(2, 65_536), default=d["batch_size"].default)
    t.add_argument("--lr-g", type=_float_range(0, 1, lo_open=True), default=d["lr_g"].default)
    t.add_argument("--lr-d", type=_float_range(0, 1, lo_open=True), default=d["lr_d"].default)
    t.add_argument("--lr-decay-epochs", metavar="N", type=int_range(0, 100_000),
                   default=d["lr_decay_epochs"].default,
                   help="the last N epochs: --lr-g and --lr-d fall linearly towards 0 (CycleGAN's schedule); "
                        "resume a run with a larger --epochs and this to anneal it (default 0: constant rates)")
    t.add_argument("--beta1", type=_float_range(0, 1), default=d["beta1"].default)
    t.add_argument("--beta2", type=_float_range(0, 1), default=d["beta2"].default)
    t.add_argument("--loss", choices=("bce", "hinge"), default=d["loss"].default,
                   help="adversarial loss of the gan objective (dcgan, cgan, mlp-gan, acgan)")
    t.add_argument("--label-smoothing", type=_float_range(0, 0.5), default=d["label_smoothing"].default,
                   help="one-sided: D's real targets become 1 − s")
    t.add_argument("--noisy-labels", type=_float_range(0, 0.5), default=d["noisy_labels"].default,
                   help="probability of flipping each real/fake target of D")
    t.add_argument("--pretrain-d-epochs", type=int_range(0, 1000), default=d["pretrain_d_epochs"].default,
                   help="ACGAN: epochs of D-classifier pretraining on real images")
    t.add_argument("--acgan-fake-class-weight", type=_float_range(0, 10), default=d["acgan_fake_class_weight"].default,
                   help="ACGAN: weight of D's class loss on generated images (1: the original ACGAN; 0: D's class "
                   "head learns from real images only, G is still trained to make its class recognisable)")
    t.add_argument("--acgan-g-class-weight", type=_float_range(0, 10), default=d["acgan_g_class_weight"].default,
                   help="ACGAN: weight of the class loss in G's objective (1: the original ACGAN; smaller: less "
                        "pull toward the images D's class head is surest of)")
    t.add_argument("--acgan-projection", action="store_true",
                   help="ACGAN: D's real/fake logit also gets the inner product of its image features with a "
                        "learned embedding of the label (projection discriminator), so it judges image and "
                        "label together; the class head still sees the image alone")
    t.add_argument("--cgan-projection", action="store_true",
                   help="cGAN: D takes the label by projection (Miyato & Koyama 2018) — the inner product of its "
                        "pooled image features with a learned embedding of the label, added to its real/fake "
                        "logit — instead of as one-hot maps joining the image channels; G is unchanged")
    t.add_argument("--init-g-from", metavar="CHECKPOINT", default=d["init_g_from"].default,
                   help="start G from this checkpoint's generator weights (same generator architecture and "
                        "classes), e.g. fine-tune a cGAN's generator with the ACGAN objective; D starts afresh")
    t.add_argument("--n-critic", type=int_range(1, 100), default=d["n_critic"].default)
    t.add_argument("--gp-weight", type=_float_range(0, 1e6), default=d["gp_weight"].default)
    t.add_argument("--kl-weight", type=_float_range(0, 1e6), default=d["kl_weight"].default)
    t.add_argument("--expost-gmm", metavar="K", type=int_range(0, 1000), default=d["expost_gmm"].default,
                   help="VAE: the checkpoint samples the decoder through a K-component, full-covariance Gaussian "
                        "mixture fitted (scikit-learn EM) to the encoder's codes of training images whenever it is "
                        "written, instead of through the N(0, I) prior (ex-post density estimation, Ghosh et al. "
                        "2020); the latent gets one more entry, which picks the component. Changes no training "
                        "step: a finished run can be resumed with it (default 0: the prior)")
    t.add_argument("--ema-decay", type=_float_range(0, 1), default=d["ema_decay"].default)
    t.add_argument("--seed", type=int_range(0, 2**32 - 1), default=d["seed"].default)
    t.add_argument("--device", default=d["device"].default, help="auto | cpu | cuda | cuda:N | mps")
    t.add_argument("--threads", type=int_range(0, 1024), default=d["threads"].default)
    t.add_argument("--channels-last", action="store_true")
    t.add_argument("--save-dtype", choices=("float16", "float32"), default=d["save_dtype"].default)
    t.add_argument("--log-every", type=int_range(1), default=d["log_every"].default)
    t.add_argument("--max-steps", type=int_range(0), default=d["max_steps"].default,
                   help="stop after this many optimisation steps (0: no limit)")
    t.add_argument("--eval-every", type=int_range(0, 100_000), default=d["eval_every"].default,
                   help="evaluate the checkpoint every N epochs and after the last with the dataset's evaluator "
                        "(mnist, fashion-mnist): metrics go into config.json, their history into "
                        "training.evaluations (0: never)")
    t.add_argument("--eval-samples", type=int_range(100, 1_000_000), default=d["eval_samples"].default,
                   help="generated images per --eval-every evaluation")
    t.add_argument("--keep-best", choices=tuple(KEEP_BEST), default=d["keep_best"].default,
                   help="the --out checkpoint holds the weights of the best --eval-every evaluation so far "
                        "(lowest fid, highest coverage, or highest min_class_accuracy: the worst class's sample "
                        "accuracy, the per-class bar's number, for conditional families) instead of the latest "
                        "epoch's; GAN training swings, and the "
                        "last epoch is not always the best (default: the latest)")
    t.add_argument("--grid-cols", type=int_range(1, 64), default=d["grid_cols"].default)
    t.add_argument("--no-tensorboard", action="store_true")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")

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

    x = sub.add_parser("experiments", help="re-run the seed articles' experiments and write docs/experiments.md",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    x.add_argument("names", nargs="*", default=["upsampling", "conditioning"],
                   help="experiments to run: upsampling, conditioning")
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
    opts: dict[str, Any] = {k: v for k, v in vars(args).items()
                            if k in TrainConfig.__dataclass_fields__ and k not in ("command", "extra")}
    if args.dataset in ("mnist", "fashion-mnist") and args.channels == 3:
        log.info("grey dataset with --channels 3: images are repeated over RGB")
    if args.family in ("wgan-gp",) and args.loss != "bce":
        parser.error("--loss applies to the gan objective, not to --family wgan-gp")
    if args.pretrain_d_epochs and args.family != "acgan":
        parser.error("--pretrain-d-epochs needs --family acgan (a discriminator with a class head)")
    if args.self_condition and args.info_weight != 1.0:
        parser.error("--info-weight weighs InfoGAN's Q head, which --self-condition replaces")
    if args.info_weight != 1.0 and not args.latent_categories:
        parser.error("--info-weight weighs the InfoGAN code's loss: it needs --latent-categories K")
    for flag, default in (("acgan_fake_class_weight", 1.0), ("acgan_g_class_weight", 1.0),
                          ("acgan_projection", False)):
        if getattr(args, flag) != default and args.family != "acgan":
            parser.error(f"--{flag.replace('_', '-')} needs --family acgan (a discriminator with a class head)")
    from training.loop import check_discriminator_options
    from training.models import get_family

    fam = get_family(args.family)
    try:
        check_discriminator_options(args, fam)
    except ConfigError as e:
        parser.error(str(e))
    if args.device != "auto" and not device_available(args.device):
        parser.error(f"--device {args.device!r} is not available here (auto, cpu, cuda[:N], mps)")
    if args.lr_decay_epochs > args.epochs:
        parser.error(f"--lr-decay-epochs {args.lr_decay_epochs} is more than --epochs {args.epochs}: the decay is "
                     "the run's last N epochs")
    if args.expost_gmm and args.family != "vae":
        parser.error(f"--expost-gmm fits a mixture to a VAE encoder's codes: it needs --family vae, not "
                     f"--family {args.family}")
    if args.keep_best and not args.eval_every:
        parser.error("--keep-best needs --eval-every N: it keeps the best of those evaluations")
    if args.keep_best == "min_class_accuracy" and not fam.conditional:
        parser.error(f"--keep-best min_class_accuracy needs a conditional family (cgan, acgan), not --family "
                     f"{args.family}: an unconditional model has no per-class accuracy (fid, coverage)")
    if args.eval_every:
        from training.evaluation.evaluator import available_evaluators, default_evaluator_root

        have = available_evaluators(default_evaluator_root())
        if args.dataset not in have:
            parser.error(f"--eval-every needs a dataset with an evaluator ({', '.join(have) or 'none found'}), "
                         f"not {args.dataset!r}")
        if not fam.sampleable:
            parser.error(f"--eval-every: --family {args.family} reconstructs, it cannot be sampled and evaluated")
    cfg = TrainConfig(**opts, tensorboard=not args.no_tensorboard, progress=not args.no_progress,
                      command=_command_line(argv), extra={"resume": args.resume}).resolved()
    if args.dry_run:
        print(json.dumps(cfg.to_json(), indent=2))
        return 0
    from training.data import DatasetError
    from training.loop import train

    previous = _stop_on_sigterm()
    try:
        train(cfg)
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


def parse_label(value: str | None, class_names: list[str]) -> int | None:
    """A label given as an index or a class name → index (None when not given)."""
    if value is None:
        return None
    if value.isdigit() and int(value) < len(class_names):
        return int(value)
    if value in class_names:
        return class_names.index(value)
    raise ValueError(f"unknown label {value!r}; use 0..{len(class_names) - 1} or one of {', '.join(class_names)}")


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from training.checkpoint import CheckpointError, load_generator
    from training.images import make_grid, png_bytes, to_uint8, upscale
    from training.latent import grid_seeds, latents

    if not device_available(args.device):
        print(f"error: --device {args.device!r} is not available here", file=sys.stderr)
        return 2
    try:
        g, cfg = load_generator(args.checkpoint, args.device)
    except CheckpointError as e:
        print(f"error: checkpoint: {e}", file=sys.stderr)
        return 2
    if not cfg.sampleable:
        print(f"error: {cfg.name} is a {cfg.family} (reconstruction only): it cannot be sampled", file=sys.stderr)
        return 2
    try:
        label = parse_label(args.label, cfg.class_names) if cfg.conditional else None
        if args.label is not None and not cfg.conditional:
            raise ValueError(f"{cfg.name} is unconditional: drop --label")
        seeds = grid_seeds(args.seed, args.n)
    except ValueError as e:
        print(f"error: {'--label' if 'label' in str(e) else '--seed/--n'}: {e}", file=sys.stderr)
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
    from training.evaluation import cli as evaluation_cli

    if args.command in evaluation_cli.COMMANDS:
        return evaluation_cli.run(args, parser)
    parser.error(f"unknown command {args.command}")
    return 2
