"""The resume state of a run (``runs/<name>/state.pt``): networks, optimisers, RNG, step and the run's
progress, written atomically after every epoch and read with ``torch.load(..., weights_only=True)``.
It lives in the run folder, never in what ships."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from training.checkpoint import GeneratorSource, atomic_write_bytes
from training.options import ConfigError, TrainOptions

if TYPE_CHECKING:
    from training.loop import Trainer

log = logging.getLogger("training")
STATE = "state.pt"
# The options that change what a training step computes (besides the architecture, which --resume
# refuses to change): a resumed run with other values of these is another recipe.
RECIPE_KEYS = ("batch_size", "lr_g", "lr_d", "lr_decay_epochs", "beta1", "beta2", "loss", "label_smoothing",
               "noisy_labels", "pretrain_d_epochs", "acgan_fake_class_weight", "acgan_g_class_weight", "n_critic",
               "gp_weight", "kl_weight", "ema_decay", "diffaugment", "r1_gamma", "info_weight", "l1_weight",
               "l1_only")
# The options that make the networks: --resume refuses to change them.
ARCH_KEYS = ("family", "dataset", "resolution", "channels", "z_dim", "width", "upsample", "bn", "classes",
             "minibatch_std", "spectral_norm", "acgan_projection", "cgan_projection", "latent_categories",
             "self_condition", "recluster_every", "transform")


@dataclass
class Progress:
    """How far a run has come: what its checkpoints record beside the weights."""

    epoch: int = 0  # epochs completed
    seconds: float = 0.0  # training time, summed over the run's parts
    images_seen: int = 0  # over all processes
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # --eval-every's history
    parts: list[dict[str, Any]] = field(default_factory=list)  # the command lines of the run, with their epoch


def save(path: Path, trainer: Trainer, progress: Progress) -> None:
    state = {
        "epoch": progress.epoch, "step": trainer.step_count, "seconds": progress.seconds,
        "images_seen": progress.images_seen, "evaluations": json.dumps(progress.evaluations),
        "parts": json.dumps(progress.parts), "config": json.dumps(trainer.opts.to_json(), sort_keys=True),
        "G": trainer.g_raw.state_dict(), "D": trainer.d_raw.state_dict(), "G_ema": trainer.ema.model.state_dict(),
        "opt_d": {},  # (an objective without D: the key older readers expect)
        **trainer.objective.state_dict(),
        "rng": torch.get_rng_state(), "g_source": trainer.g_source.model_dump_json() if trainer.g_source else "",
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load(path: Path, trainer: Trainer, device: torch.device) -> Progress:
    """Bring ``trainer`` back to the saved state; refuses a state of other networks (ConfigError)."""
    st = torch.load(path, map_location=device, weights_only=True)
    saved = json.loads(st["config"])
    defaults, now = TrainOptions.defaults(), trainer.opts.to_json()  # (defaults: keys older runs did not save)
    for key in ARCH_KEYS:
        was = saved.get(key, defaults.get(key))
        if was != now.get(key):
            raise ConfigError(f"--resume: run folder {path.parent} was trained with {key}={was!r}, "
                              f"not {now.get(key)!r}")
    source = st.get("g_source")  # where the run's G started, as it was then
    trainer.g_source = GeneratorSource.model_validate_json(source) if source and source != "null" else None
    trainer.g_raw.load_state_dict(st["G"])
    trainer.d_raw.load_state_dict(st["D"])
    trainer.ema.model.load_state_dict(st["G_ema"])
    trainer.objective.load_state_dict(st)
    torch.set_rng_state(st["rng"])
    trainer.step_count = int(st["step"])
    # (a state saved before the parts were recorded: its last command, from an unknown epoch)
    parts = json.loads(st["parts"]) if "parts" in st else [{"command": saved.get("command", ""), "from_epoch": None}]
    return Progress(int(st["epoch"]), float(st["seconds"]), int(st["images_seen"]),
                    json.loads(st.get("evaluations", "[]")), parts)


def start(opts: TrainOptions, trainer: Trainer, device: torch.device, main: bool) -> Progress:
    """The run's progress: from its resume state with --resume (when there is one), else from scratch;
    with this command line recorded as a part of the run when it is a new one. A fresh run with
    --init-g-from starts G from that checkpoint."""
    path = Path(opts.run_dir) / STATE
    progress = Progress()
    if opts.resume and path.exists():
        progress = load(path, trainer, device)
        if main:
            log.info("resumed from %s at epoch %d (step %d)", path, progress.epoch, trainer.step_count)
    elif opts.resume and main:
        log.info("--resume: no %s yet, starting from scratch", path)
    if not progress.parts or progress.parts[-1]["command"] != opts.command:  # the same command line goes on
        progress.parts.append({"command": opts.command, "from_epoch": progress.epoch})
    if opts.init_g_from and progress.epoch == 0 and trainer.step_count == 0:  # a resumed G is in its state
        init_g_from(trainer, Path(opts.init_g_from))
    return progress


def init_g_from(trainer: Trainer, folder: Path) -> None:
    """Start G (and its average) from a checkpoint's generator: a fine-tune; D starts afresh. The
    checkpoint must have this run's generator architecture and, for a conditional G, its classes (its
    label k must mean this dataset's class k; an unconditional checkpoint records none). Every rank
    loads the same file, so DDP replicas start equal."""
    from training.checkpoint import load_generator

    try:
        source, scfg = load_generator(folder)
    except (OSError, ValueError) as e:  # CheckpointError is a ValueError
        raise ConfigError(f"--init-g-from {folder}: {e}") from e
    opts = trainer.opts
    spec: tuple[str, Any] = (scfg.generator.class_name, scfg.generator.kwargs)
    weights = source
    if spec[0] == "ExPostGenerator" and opts.expost_gmm:  # a VAE decoder inside its ex-post mixture
        decoder = scfg.generator.kwargs["decoder"]
        if opts.freeze_generator and scfg.generator.kwargs["components"] != opts.expost_gmm:
            raise ConfigError(f"--init-g-from {folder}: its mixture has {scfg.generator.kwargs['components']} "
                              f"components; --freeze-generator keeps it, so give --expost-gmm "
                              f"{scfg.generator.kwargs['components']}")
        spec, weights = (decoder["class"], decoder["kwargs"]), source.decoder  # type: ignore[assignment]
    if spec != (trainer.g_class, trainer.g_kwargs):
        raise ConfigError(f"--init-g-from {folder}: its generator is {spec[0]} "
                          f"{spec[1]}, this run's is {trainer.g_class} {trainer.g_kwargs}")
    if trainer.fam.conditional and scfg.class_names != trainer.class_names:
        raise ConfigError(f"--init-g-from {folder}: its classes {scfg.class_names} are not this dataset's "
                          f"{trainer.class_names}")
    trainer.g_raw.load_state_dict(weights.state_dict())  # copy_ casts float16 weights to this G's dtype
    if opts.freeze_generator:
        trainer.g_frozen = source.to(next(trainer.g_raw.parameters()).device)
    trainer.ema.model.load_state_dict(trainer.g_raw.state_dict())
    trainer.g_source = GeneratorSource(folder=str(folder), name=scfg.name, generator_sha256=scfg.generator_sha256,
                                       command=scfg.training.command, epochs=scfg.training.epochs,
                                       seconds=scfg.training.seconds)
