"""The resolved options of one training run: a frozen dataclass, written into config.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# The metrics ``--keep-best`` can select on, and whether a higher value is better.
KEEP_BEST: dict[str, bool] = {"fid": False, "coverage": True, "min_class_accuracy": True}


def keep_best_value(metrics: dict[str, Any], key: str) -> float | None:
    """The number ``--keep-best key`` compares in a checkpoint's metrics: the metric itself, or for
    ``min_class_accuracy`` (the per-class bar's number) the lowest of ``accuracy_per_class``."""
    if key == "min_class_accuracy":
        per_class = [v for v in (metrics.get("accuracy_per_class") or {}).values() if v is not None]
        return min(per_class) if per_class else None
    value = metrics.get(key)
    return None if value is None else float(value)


class ConfigError(ValueError):
    """An option combination the run cannot use; the message starts with the flag."""


@dataclass(frozen=True)
class TrainConfig:
    family: str
    dataset: str
    out: str
    epochs: int = 20
    name: str = ""  # default: the --out folder's name
    run_dir: str = ""  # default: runs/<name>
    data_dir: str | None = None
    classes: tuple[int, ...] | None = None  # a subset of class indices (e.g. the 5-class ACGAN runs)
    synthetic_size: int = 3000
    resolution: int = 28
    channels: int = 1
    z_dim: int = 100
    width: int = 64  # ngf = ndf
    upsample: str = "convT"
    bn: str = "before-act"
    minibatch_std: bool = False  # D sees the batch's feature standard deviation as one more channel
    spectral_norm: bool = False  # D's layers are spectrally normalised (and not batch-/layer-normalised)
    r1_gamma: float = 0.0  # R1 penalty weight: (γ/2)·E‖∇D(real)‖² in D's loss (0: none)
    latent_categories: int = 0  # InfoGAN: a K-way categorical code in G's latent, recovered by D's Q head (0: none)
    info_weight: float = 1.0  # InfoGAN: weight λ of the code's cross-entropy in D's (Q's) and G's losses
    self_condition: bool = False  # D judges fakes with their code, reals with their k-means cluster (no Q head)
    recluster_every: int = 0  # --self-condition: re-cluster the reals on D's features every N epochs (0: never)
    diffaugment: str = ""  # e.g. "color,translation,cutout": random transforms of all D's inputs, real and fake
    batch_size: int = 128
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    lr_decay_epochs: int = 0  # the last N epochs: both rates fall linearly towards 0 (CycleGAN's schedule; 0: none)
    beta1: float = 0.5
    beta2: float = 0.999
    loss: str = "bce"  # "bce" (non-saturating) | "hinge" for the gan objective
    label_smoothing: float = 0.0  # one-sided: real targets become 1 − s
    noisy_labels: float = 0.0  # probability of flipping each real/fake target for D
    pretrain_d_epochs: int = 0  # ACGAN: train D's class head on real images first
    acgan_fake_class_weight: float = 1.0  # ACGAN: weight of D's class loss on fakes (0: classes from real only)
    acgan_g_class_weight: float = 1.0  # ACGAN: weight of the class loss in G's objective
    init_g_from: str = ""  # a checkpoint folder whose generator weights G starts from (fine-tuning)
    acgan_projection: bool = False  # ACGAN: D's real/fake head also judges the label (projection discriminator)
    cgan_projection: bool = False  # cGAN: D takes the label by projection instead of concatenated label maps
    n_critic: int = 5  # WGAN-GP critic steps per generator step
    gp_weight: float = 10.0
    kl_weight: float = 1.0
    expost_gmm: int = 0  # VAE: sample the decoder through a K-component mixture fitted to the codes (0: N(0, I))
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # 0: torch's default
    channels_last: bool = False
    save_dtype: str = "float16"
    log_every: int = 50
    max_steps: int = 0  # stop after this many steps in total (0: no limit); for smoke tests
    eval_every: int = 0  # evaluate the checkpoint every N epochs and after the last (0: never)
    keep_best: str = ""  # a KEEP_BEST key: the out folder keeps the best evaluated weights ("": the latest)
    eval_samples: int = 10_000
    grid_cols: int = 10
    tensorboard: bool = True
    progress: bool = True
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> TrainConfig:
        from pathlib import Path

        name = self.name or Path(self.out).resolve().name
        return dataclasses.replace(self, name=name, run_dir=self.run_dir or str(Path("runs") / name))

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes) if self.classes is not None else None
        return d
