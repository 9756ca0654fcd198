"""The options of one training run: one frozen model, validated here and nowhere else.

``TrainOptions(**values)`` checks every value's type and range, the choices, and the rules between
options (an option of another family is refused with a message naming it); unknown keys are errors.
The command line (``training/cli.py``) builds its ``train`` parser from the fields below, the
experiments and benchmarks construct it directly, and ``train()`` takes it. The resolved options are
written into the checkpoint's config.json (``training.options``).

Each field says which group of ``--help`` it belongs to; the options that only one family reads are
declared by that family's objective (``training/objectives/``, ``Objective.options``): set on another
family, they are an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from training.checkpoint import Transform

# The metrics ``--keep-best`` can select on, and whether a higher value is better.
KEEP_BEST: dict[str, bool] = {"fid": False, "coverage": True, "min_class_accuracy": True}

# --help sections, in the order they are shown: group key → title.
GROUPS: dict[str, str] = {
    "run": "the run",
    "data": "data",
    "networks": "networks (every family)",
    "discriminator": "discriminator (the families with one)",
    "optimiser": "optimisation (every family)",
    "gan": "GAN objective (mlp-gan, dcgan, cgan, acgan)",
    "cgan": "cGAN (--family cgan)",
    "acgan": "ACGAN (--family acgan)",
    "codes": "latent codes: InfoGAN and self-conditioning (dcgan, wgan-gp)",
    "wgan-gp": "WGAN-GP (--family wgan-gp)",
    "vae": "VAE (--family vae)",
    "pix2pix": "pix2pix image-to-image translation (--family pix2pix)",
    "evaluation": "evaluation and checkpoints",
    "machine": "machine and logging",
}


class ConfigError(ValueError):
    """An option combination the run cannot use; the message starts with the flag."""


def flag(name: str) -> str:
    """The command-line flag of an option: ``lr_g`` → ``--lr-g``."""
    return "--" + name.replace("_", "-")


def opt(default: Any, help: str = "", *, group: str, ge: float | None = None, gt: float | None = None,
        le: float | None = None, metavar: str | None = None) -> Any:
    """A field with its --help group, text and range (checked by pydantic, shown and parsed by argparse)."""
    extra: dict[str, Any] = {"group": group}
    if metavar:
        extra["metavar"] = metavar
    return Field(default, description=help, ge=ge, gt=gt, le=le, json_schema_extra=extra)


def keep_best_value(metrics: dict[str, Any], key: str) -> float | None:
    """The number ``--keep-best key`` compares in a checkpoint's metrics: the metric itself, or for
    ``min_class_accuracy`` (the per-class bar's number) the lowest of ``accuracy_per_class``."""
    if key == "min_class_accuracy":
        per_class = [v for v in (metrics.get("accuracy_per_class") or {}).values() if v is not None]
        return min(per_class) if per_class else None
    value = metrics.get(key)
    return None if value is None else float(value)


def check_family(v: str) -> str:
    from training.models import family_names

    if v not in family_names():
        raise ValueError(f"unknown family {v!r}; choose one of {', '.join(family_names())}")
    return v


def check_dataset(v: str) -> str:
    from training.data import DATASETS

    if v in DATASETS or (v.startswith("folder:") and len(v) > len("folder:")):
        return v
    raise ValueError(f"unknown dataset {v!r}; choose one of {', '.join(DATASETS)}")


def check_background(v: str) -> str:
    from training.data import DatasetError, parse_background

    try:
        parse_background(v)
    except DatasetError as e:
        raise ValueError(str(e)) from None
    return v


def check_diffaugment(v: str) -> str:
    """A DiffAugment policy, normalised (``"cutout, color"`` → ``"cutout,color"``)."""
    from training.augment import parse_policy

    return ",".join(parse_policy(v))


class TrainOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # -- the run
    family: str = opt(..., "model family (see `python -m training families`)", group="run")
    dataset: str = opt(..., "fashion-mnist | mnist | emoji | synthetic | folder:PATH (see training/data.py)",
                       group="run")
    out: str = opt(..., "checkpoint folder to write, e.g. checkpoints/my-model", group="run")
    epochs: int = opt(20, group="run", ge=1, le=100_000)
    name: str = opt("", "model name (default: the --out folder's name)", group="run")
    run_dir: str = opt("", "where resume state, grids and TensorBoard logs go (default: runs/NAME)", group="run")
    # -- data
    data_dir: str | None = opt(None, "folder with IDX files (mnist, fashion-mnist) or the emoji images (default "
                                     "for emoji: $GANSERVE_DATA/emoji, else ~/.cache/ganserve/emoji)", group="data")
    classes: tuple[int, ...] | None = opt(None, "train on a subset of class indices, e.g. 0,1,2,3,4", group="data")
    synthetic_size: int = opt(3000, group="data", ge=6, le=1_000_000)
    background: str = opt("white", "what the transparent pixels of emoji and folder: images are composited on: "
                          "white, black, grey or #rrggbb", group="data", metavar="COLOUR")
    # -- networks
    resolution: Literal[28, 32, 64, 96] = opt(28, group="networks")
    channels: Literal[1, 3] = opt(1, group="networks")
    z_dim: int = opt(100, group="networks", ge=1, le=4096)
    width: int = opt(64, "ngf = ndf", group="networks", ge=1, le=1024)
    upsample: Literal["convT", "nearest-conv"] = opt("convT", group="networks")
    bn: Literal["before-act", "after-act"] = opt("before-act", group="networks")
    # -- discriminator
    minibatch_std: bool = opt(False, "D gets the batch's mean feature standard deviation as one more input channel "
                              "of its last layer (ProGAN): a batch of too-similar fakes is easy to spot (dcgan, cgan, "
                              "acgan, wgan-gp)", group="discriminator")
    spectral_norm: bool = opt(False, "spectral normalisation of every layer of D in place of its batch-/layer-norm "
                              "(SNGAN); usually with --loss hinge (dcgan, cgan, acgan, wgan-gp)", group="discriminator")
    r1_gamma: float = opt(0.0, "R1 penalty: D's loss gets γ/2 × the mean squared norm of its gradient at real "
                          "images, so it cannot win by walling the data off (Mescheder et al. 2018; gan and acgan "
                          "objectives: dcgan, cgan, acgan, mlp-gan)", group="gan", ge=0, le=1e4)
    latent_categories: int = opt(0, "InfoGAN (Chen et al. 2016): the generator reads a K-way categorical code from "
                                 "its latent (the largest of z's first K entries, one-hot; uniform over K for "
                                 "z ~ N(0, I), so a seed still fixes the image) and D gets a second head, Q, trained "
                                 "with G to recover the code from the image — an unlabelled way to give G discrete "
                                 "modes to jump between (dcgan, wgan-gp; 2 ≤ K ≤ --z-dim)",
                                 group="codes", ge=0, le=4096, metavar="K")
    info_weight: float = opt(1.0, "InfoGAN: weight λ of the code's cross-entropy in D's and G's losses (with "
                             "--latent-categories)", group="codes", ge=0, le=100)
    self_condition: bool = opt(False, "with --latent-categories K: a self-conditioned GAN (Liu et al. 2020) instead "
                               "of InfoGAN's Q head — the training images are cut into K equal k-means clusters "
                               "(pixel PCA) and D judges each real image with its cluster and each generated one "
                               "with its code, as a cGAN's D judges image and label; G stays unconditional to its "
                               "users (dcgan; wgan-gp, whose critic then judges each fake with the cluster of the "
                               "real image it is paired with in the gradient penalty: the fake's code is drawn to "
                               "match)", group="codes")
    recluster_every: int = opt(0, "with --self-condition: every N epochs the training images are clustered again, "
                               "by k-means on D's features started from the current clusters (so each keeps its "
                               "code), as the paper does; D then takes the label by projection, so its features do "
                               "not see it (0: the pixel clusters stay)", group="codes", ge=0, le=100_000,
                               metavar="N")
    diffaugment: str = opt("", "differentiable augmentation (DiffAugment): the same kinds of random transforms of "
                           "real and generated images, in D's step and in G's, so a discriminator cannot learn a "
                           "small dataset by heart; a comma-separated list of color, translation, cutout (the "
                           "paper's choice for little data: all three); every family with a discriminator",
                           group="discriminator", metavar="POLICY")
    # -- optimisation
    batch_size: int = opt(128, group="optimiser", ge=2, le=65_536)
    lr_g: float = opt(2e-4, group="optimiser", gt=0, le=1)
    lr_d: float = opt(2e-4, "the discriminator's (critic's) rate", group="optimiser", gt=0, le=1)
    lr_decay_epochs: int = opt(0, "the last N epochs: --lr-g and --lr-d fall linearly towards 0 (CycleGAN's "
                               "schedule); resume a run with a larger --epochs and this to anneal it (0: constant "
                               "rates)", group="optimiser", ge=0, le=100_000, metavar="N")
    beta1: float = opt(0.5, group="optimiser", ge=0, le=1)
    beta2: float = opt(0.999, group="optimiser", ge=0, le=1)
    loss: Literal["bce", "hinge"] = opt("bce", "adversarial loss of the gan objective (dcgan, cgan, mlp-gan, acgan)",
                                        group="gan")
    label_smoothing: float = opt(0.0, "one-sided: D's real targets become 1 − s", group="gan", ge=0, le=0.5)
    noisy_labels: float = opt(0.0, "probability of flipping each real/fake target of D", group="gan", ge=0, le=0.5)
    pretrain_d_epochs: int = opt(0, "ACGAN: epochs of D-classifier pretraining on real images", group="acgan",
                                 ge=0, le=1000)
    acgan_fake_class_weight: float = opt(1.0, "ACGAN: weight of D's class loss on generated images (1: the original "
                                         "ACGAN; 0: D's class head learns from real images only, G is still "
                                         "trained to make its class recognisable)", group="acgan", ge=0, le=10)
    acgan_g_class_weight: float = opt(1.0, "ACGAN: weight of the class loss in G's objective (1: the original "
                                      "ACGAN; smaller: less pull toward the images D's class head is surest of)",
                                      group="acgan", ge=0, le=10)
    init_g_from: str = opt("", "start G from this checkpoint's generator weights (same generator architecture and "
                           "classes), e.g. fine-tune a cGAN's generator with the ACGAN objective; D starts afresh",
                           group="run", metavar="CHECKPOINT")
    freeze_generator: bool = opt(False, "train only the encoder, against the decoder --init-g-from gives, which the "
                                 "checkpoint keeps exactly as it was (its weights, batch-norm statistics and a VAE's "
                                 "ex-post mixture): an encoder for a shipped decoder (ae, conv-ae, vae)", group="vae")
    acgan_projection: bool = opt(False, "ACGAN: D's real/fake logit also gets the inner product of its image "
                                 "features with a learned embedding of the label (projection discriminator), so it "
                                 "judges image and label together; the class head still sees the image alone",
                                 group="acgan")
    cgan_projection: bool = opt(False, "cGAN: D takes the label by projection (Miyato & Koyama 2018) — the inner "
                                "product of its pooled image features with a learned embedding of the label, added "
                                "to its real/fake logit — instead of as one-hot maps joining the image channels; G "
                                "is unchanged", group="cgan")
    n_critic: int = opt(5, "critic steps per generator step", group="wgan-gp", ge=1, le=100)
    gp_weight: float = opt(10.0, "weight of the gradient penalty", group="wgan-gp", ge=0, le=1e6)
    kl_weight: float = opt(1.0, "β: weight of the KL term of the ELBO", group="vae", ge=0, le=1e6)
    expost_gmm: int = opt(0, "the checkpoint samples the decoder through a K-component, full-covariance Gaussian "
                          "mixture fitted (scikit-learn EM) to the encoder's codes of training images whenever it is "
                          "written, instead of through the N(0, I) prior (ex-post density estimation, Ghosh et al. "
                          "2020); the latent gets one more entry, which picks the component. Changes no training "
                          "step: a finished run can be resumed with it (0: the prior)", group="vae", ge=0, le=1000,
                          metavar="K")
    transform: Transform = opt("edges", "the input of each training pair, made from its target image "
                               "(training/pairs.py): edges (a Canny edge map, black lines on white) or grey "
                               "(greyscale → colour, with --channels 3)", group="pix2pix")
    l1_weight: float = opt(100.0, "λ: weight of the L1 distance to the true target in G's loss, beside the cGAN "
                           "loss", group="pix2pix", ge=0, le=1e6)
    l1_only: bool = opt(False, "the paper's baseline: G trained on λ·L1 alone, no discriminator", group="pix2pix")
    ema_decay: float = opt(0.999, "decay of the generator's moving average (the copy that is saved)",
                           group="optimiser", ge=0, le=1)
    seed: int = opt(0, group="run", ge=0, le=2**32 - 1)
    # -- machine and logging
    device: str = opt("auto", "auto | cpu | cuda | cuda:N | mps", group="machine")
    threads: int = opt(0, "torch's CPU threads (0: torch's default)", group="machine", ge=0, le=1024)
    channels_last: bool = opt(False, group="machine")
    save_dtype: Literal["float16", "float32"] = opt("float16", group="evaluation")
    log_every: int = opt(50, group="machine", ge=1)
    max_steps: int = opt(0, "stop after this many optimisation steps (0: no limit)", group="machine", ge=0)
    eval_every: int = opt(0, "evaluate the checkpoint every N epochs and after the last with the dataset's evaluator "
                          "(mnist, fashion-mnist): metrics go into config.json, their history into "
                          "training.evaluations (0: never)", group="evaluation", ge=0, le=100_000)
    keep_best: Literal["", "fid", "coverage", "min_class_accuracy"] = opt(
        "", "the --out checkpoint holds the weights of the best --eval-every evaluation so far (lowest fid, highest "
        "coverage, or highest min_class_accuracy: the worst class's sample accuracy, the per-class bar's number, "
        "for conditional families) instead of the latest epoch's; GAN training swings, and the last epoch is not "
        "always the best (default: the latest)", group="evaluation")
    eval_samples: int = opt(10_000, "generated images per --eval-every evaluation", group="evaluation",
                            ge=100, le=1_000_000)
    grid_cols: int = opt(10, group="evaluation", ge=1, le=64)
    tensorboard: bool = opt(True, "TensorBoard logs in the run folder", group="machine")
    progress: bool = opt(True, "a progress bar per epoch", group="machine")
    # -- how the run was started (not options of what it learns)
    resume: bool = opt(False, "continue from the run folder's resume state", group="run")
    command: str = Field("", description="the command line that started the run (recorded in config.json)")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise ConfigError(_describe(e)) from None
        out = Path(self.out).resolve().name if self.out else ""
        # (frozen: the derived defaults are set once, here)
        object.__setattr__(self, "name", self.name or out)
        object.__setattr__(self, "run_dir", self.run_dir or str(Path("runs") / self.name))
        check_rules(self)

    @field_validator("family")
    @classmethod
    def _family(cls, v: str) -> str:
        return check_family(v)

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        return check_dataset(v)

    @field_validator("diffaugment")
    @classmethod
    def _diffaugment(cls, v: str) -> str:
        return check_diffaugment(v)

    @field_validator("background")
    @classmethod
    def _background(cls, v: str) -> str:
        return check_background(v)

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (not v or any(c < 0 for c in v) or len(set(v)) != len(v)):
            raise ValueError(f"expected distinct class indices ≥ 0, got {','.join(map(str, v))}")
        return v

    def replace(self, **changes: Any) -> TrainOptions:
        """These options with ``changes``, validated again. A name and run folder that were derived from
        --out are derived again from a new one."""
        values = self.model_dump()
        if "out" in changes and "name" not in changes and self.name == Path(self.out).resolve().name:
            values["name"] = ""
            if "run_dir" not in changes and self.run_dir == str(Path("runs") / self.name):
                values["run_dir"] = ""
        return TrainOptions(**{**values, **changes})

    def to_json(self) -> dict[str, Any]:
        d = self.model_dump()
        d["classes"] = list(self.classes) if self.classes is not None else None
        return d

    def recorded(self) -> dict[str, Any]:
        """What config.json records as ``training.options``: everything but how the run was started."""
        return {k: v for k, v in self.to_json().items() if k not in ("command", "resume")}

    @staticmethod
    def defaults() -> dict[str, Any]:
        """Every option's default (for the keys older runs did not save)."""
        return {k: f.default for k, f in TrainOptions.model_fields.items() if not f.is_required()}


def _describe(e: ValidationError) -> str:
    """pydantic's errors as the command line says them: each names its flag."""
    parts = []
    for err in e.errors():
        loc = err["loc"][0] if err["loc"] else ""
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown option {loc!r} ({flag(str(loc))})")
        elif err["type"] == "missing":
            parts.append(f"{flag(str(loc))} is required (or a --recipe that sets it)")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{flag(str(loc))}: {msg}, got {err.get('input')!r}" if "got" not in msg
                         else f"{flag(str(loc))}: {msg}")
    return "; ".join(parts)


def check_rules(o: TrainOptions) -> None:
    """The rules between options; raises ConfigError naming the flag."""
    from training.models import get_family
    from training.objectives import OBJECTIVES, objective_of

    fam = get_family(o.family)
    owned = objective_of(o.family).options
    defaults = TrainOptions.defaults()
    for fld in ("minibatch_std", "spectral_norm"):
        if getattr(o, fld) and not fam.conv_discriminator:
            raise ConfigError(f"{flag(fld)} needs a convolutional discriminator (dcgan, cgan, acgan, wgan-gp), "
                              f"not --family {fam.name}")
    if o.cgan_projection and fam.name != "cgan":
        raise ConfigError(f"--cgan-projection changes a cGAN's discriminator (--family cgan), not --family {fam.name}"
                          + (" (its own flag: --acgan-projection)" if fam.name == "acgan" else ""))
    if o.background != defaults["background"] and not (o.dataset == "emoji" or o.dataset.startswith("folder:")):
        raise ConfigError(f"--background composites the transparent pixels of emoji and folder: images; --dataset "
                          f"{o.dataset} has none")
    k = o.latent_categories
    if k and (fam.conditional or not fam.conv_discriminator):
        raise ConfigError(f"--latent-categories needs an unconditional family with a convolutional discriminator "
                          f"(dcgan, wgan-gp), not --family {fam.name}")
    # An option one objective reads, set for a family whose objective does not.
    for name in sorted({n for obj in OBJECTIVES.values() for n in obj.options} - set(owned)):
        if getattr(o, name) != defaults[name]:
            families = ", ".join(_families_reading(name))
            raise ConfigError(f"{flag(name)} is an option of --family {families}, not of --family {fam.name}")
    if k and not 2 <= k <= o.z_dim:
        raise ConfigError(f"--latent-categories must be 0 (none) or 2–{o.z_dim} (--z-dim), got {k}")
    if o.self_condition and not k:
        raise ConfigError(f"--self-condition needs --latent-categories K (--family {fam.name} without "
                          "--latent-categories)")
    if o.recluster_every and not o.self_condition:
        raise ConfigError("--recluster-every re-clusters a self-conditioned GAN's training images: it needs "
                          "--self-condition")
    if o.self_condition and o.info_weight != 1.0:
        raise ConfigError("--info-weight weighs InfoGAN's Q head, which --self-condition replaces")
    if o.info_weight != 1.0 and not k:
        raise ConfigError("--info-weight weighs the InfoGAN code's loss: it needs --latent-categories K")
    if o.lr_decay_epochs > o.epochs:
        raise ConfigError(f"--lr-decay-epochs {o.lr_decay_epochs} is more than --epochs {o.epochs}: the decay is "
                          "the run's last N epochs")
    if o.freeze_generator and not o.init_g_from:
        raise ConfigError("--freeze-generator trains an encoder for a given decoder: it needs --init-g-from CHECKPOINT")
    if o.keep_best and not o.eval_every:
        raise ConfigError("--keep-best needs --eval-every N: it keeps the best of those evaluations")
    if o.keep_best == "min_class_accuracy" and not fam.conditional:
        raise ConfigError(f"--keep-best min_class_accuracy needs a conditional family (cgan, acgan), not --family "
                          f"{fam.name}: an unconditional model has no per-class accuracy (fid, coverage)")
    if fam.translator:
        from training.models.pix2pix import UNET_RESOLUTIONS
        from training.pairs import check_transform

        if o.resolution not in UNET_RESOLUTIONS:
            raise ConfigError(f"--resolution {o.resolution}: --family {fam.name}'s U-Net halves the image down to "
                              f"1×1, so it needs a power of two: 32 or 64 (a 28×28 dataset is resized to 32)")
        try:
            check_transform(o.transform, o.channels)
        except ValueError as e:
            raise ConfigError(f"--transform {o.transform}: {e}") from None
        if o.eval_every:
            raise ConfigError(f"--eval-every: --family {fam.name} is measured on held-out pairs by `python -m "
                              "training evaluate CHECKPOINT` after training, not during it")
    if o.eval_every and not fam.sampleable:
        raise ConfigError(f"--eval-every: --family {fam.name} reconstructs, it cannot be sampled and evaluated")


def _families_reading(name: str) -> list[str]:
    from training.models import family_names
    from training.objectives import objective_of

    return [f for f in family_names() if name in objective_of(f).options]


def check_environment(o: TrainOptions) -> None:
    """What this machine must have for the options: the device, and an evaluator for --eval-every."""
    from training.devices import device_available

    if o.device != "auto" and not device_available(o.device):
        raise ConfigError(f"--device {o.device!r} is not available here (auto, cpu, cuda[:N], mps)")
    if o.eval_every:
        from training.evaluation.evaluator import available_evaluators, default_evaluator_root

        have = available_evaluators(default_evaluator_root())
        if o.dataset not in have:
            raise ConfigError(f"--eval-every needs a dataset with an evaluator ({', '.join(have) or 'none found'}), "
                              f"not {o.dataset!r}")
