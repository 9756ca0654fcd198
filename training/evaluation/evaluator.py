"""The evaluator classifiers: one small CNN per dataset, trained by the project.

An evaluator folder is ``checkpoints/evaluators/<dataset>/{evaluator.safetensors, config.json}``.
``config.json`` rebuilds the network from JSON kwargs and records how it was trained,
its test accuracy and the sha256 of the weights; :func:`load_evaluator` reads
safetensors only and refuses weights whose sha256 does not match. The penultimate
layer (``feature_dim`` wide, after its ReLU) is the feature space of FID, KID and
precision/recall/density/coverage.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import nn
from torch.nn import functional as F

from training.checkpoint import (
    StrictModel,
    atomic_write_bytes,
    atomic_write_json,
    describe_invalid,
    sha256_bytes,
    weights_bytes,
)

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "evaluator.safetensors"
MAX_CONFIG_BYTES = 1 << 20
DATASET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
REPO_EVALUATORS = Path(__file__).resolve().parents[2] / "checkpoints" / "evaluators"


class EvaluatorError(ValueError):
    """An evaluator that is missing or cannot be loaded; the message says which file and why."""


# --- the network ---------------------------------------------------------------------------


class EvaluatorNet(nn.Module):
    """images (B, C, R, R) in [-1, 1] → class logits (B, K); ``features`` gives (B, feature_dim).

    Three conv-BN-ReLU stages at R, R/2, R/4 (each followed by 2×2 max-pooling), a
    fully connected feature layer and a linear classifier: ~240k parameters at
    width 32, a few MFLOPs per 28×28 image, so 10k images take seconds on one core
    (64×64 RGB: ~1.1M parameters, most of them in the feature layer's 8·8·128 inputs).
    """

    def __init__(self, channels: int = 1, resolution: int = 28, num_classes: int = 10, width: int = 32,
                 feature_dim: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        self.channels, self.resolution, self.num_classes = channels, resolution, num_classes
        self.feature_dim = feature_dim
        layers: list[nn.Module] = []
        c_in, side = channels, resolution
        for c_out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True),
                       nn.MaxPool2d(2)]
            c_in, side = c_out, side // 2
        self.conv = nn.Sequential(*layers)  # (B, 4w, R/8, R/8)
        self.feature = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, feature_dim), nn.ReLU(True))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(self.conv(x))  # (B, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x)))  # (B, K)


# --- config.json ---------------------------------------------------------------------------


class ArchSpec(StrictModel):
    class_name: Literal["EvaluatorNet"] = Field(alias="class")
    kwargs: dict[str, Any]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EvaluatorTraining(StrictModel):
    command: str
    epochs: int = Field(ge=0)
    seconds: float = Field(ge=0)
    seed: int
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    augment: str
    threads: int = Field(ge=0)
    num_train: int = Field(ge=0)


class EvaluatorConfig(StrictModel):
    format_version: Literal[1] = 1
    kind: Literal["ganserve-evaluator"] = "ganserve-evaluator"
    dataset: str = Field(pattern=DATASET_PATTERN.pattern)
    class_names: list[str]
    architecture: ArchSpec
    channels: Literal[1, 3]
    resolution: int = Field(ge=8, le=1024)
    value_range: tuple[float, float] = (-1.0, 1.0)
    feature_dim: int = Field(ge=1)
    test_accuracy: float = Field(ge=0, le=1)
    test_accuracy_per_class: dict[str, float]
    num_test: int = Field(ge=0)
    training: EvaluatorTraining
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    weights_dtype: Literal["float32", "float16"] = "float32"


# --- save / load ---------------------------------------------------------------------------


def save_evaluator(out_dir: str | Path, net: EvaluatorNet, config: dict[str, Any],
                   dtype: str = "float32") -> EvaluatorConfig:
    """Write weights then config.json (atomically); ``config`` is all but the weights' sha256/dtype."""
    data = weights_bytes(net, dtype, {"ganserve_evaluator_format_version": str(FORMAT_VERSION)})
    cfg = EvaluatorConfig.model_validate({**config, "weights_sha256": sha256_bytes(data), "weights_dtype": dtype})
    out = Path(out_dir)
    atomic_write_bytes(out / WEIGHTS, data)
    atomic_write_json(out / CONFIG, cfg.model_dump(mode="json", by_alias=True))
    return cfg


def read_evaluator_config(folder: str | Path) -> EvaluatorConfig:
    p = Path(folder) / CONFIG
    try:
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise EvaluatorError(f"{p}: larger than {MAX_CONFIG_BYTES} bytes")
        return EvaluatorConfig.model_validate_json(p.read_bytes())
    except FileNotFoundError:
        raise EvaluatorError(f"{p}: missing (an evaluator needs {CONFIG} and {WEIGHTS})") from None
    except OSError as e:
        raise EvaluatorError(f"{p}: unreadable ({e})") from None
    except ValidationError as e:
        raise EvaluatorError(describe_invalid(p, e)) from None


def load_evaluator(folder: str | Path, device: str | torch.device = "cpu") -> tuple[EvaluatorNet, EvaluatorConfig]:
    """Evaluator folder → (network in eval mode on ``device``, config); sha256-checked, safetensors only."""
    folder = Path(folder)
    cfg = read_evaluator_config(folder)
    wpath = folder / WEIGHTS
    try:
        data = wpath.read_bytes()
    except FileNotFoundError:
        raise EvaluatorError(f"{wpath}: missing (only safetensors weights are loaded, never pickles)") from None
    digest = sha256_bytes(data)
    if digest != cfg.weights_sha256:
        raise EvaluatorError(f"{wpath}: sha256 {digest[:12]}… does not match config.json's "
                             f"{cfg.weights_sha256[:12]}… (truncated, corrupt or swapped)")
    try:
        state = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise EvaluatorError(f"{wpath}: not a valid safetensors file ({e})") from None
    try:
        net = EvaluatorNet(**cfg.architecture.kwargs)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    except (TypeError, ValueError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else "mismatch"
        raise EvaluatorError(f"{wpath}: weights do not match config.json's architecture ({msg})") from None
    if net.feature_dim != cfg.feature_dim or net.num_classes != len(cfg.class_names):
        raise EvaluatorError(f"{folder / CONFIG}: feature_dim/class_names disagree with the architecture kwargs")
    net.eval().requires_grad_(False)
    return net.to(device), cfg


def default_evaluator_root() -> Path:
    """``$GANSERVE_EVALUATORS``, else ``./checkpoints/evaluators``, else the repository's own folder."""
    env = os.environ.get("GANSERVE_EVALUATORS")
    if env:
        return Path(env)
    local = Path("checkpoints") / "evaluators"
    return local if local.is_dir() else REPO_EVALUATORS


def available_evaluators(root: str | Path) -> list[str]:
    r = Path(root)
    if not r.is_dir():
        return []
    return sorted(d.name for d in r.iterdir() if d.is_dir() and (d / CONFIG).is_file() and (d / WEIGHTS).is_file())


def evaluator_for(dataset: str, root: str | Path | None = None,
                  device: str | torch.device = "cpu") -> tuple[EvaluatorNet, EvaluatorConfig]:
    """Load the evaluator of ``dataset`` from ``root`` (default :func:`default_evaluator_root`)."""
    root = Path(root) if root is not None else default_evaluator_root()
    have = available_evaluators(root)
    if not DATASET_PATTERN.match(dataset) or dataset not in have:
        listed = ", ".join(have) if have else "none"
        raise EvaluatorError(
            f"no evaluator for dataset {dataset!r} in {root} (evaluators exist for: {listed}); train one with "
            f"`python -m training train-evaluator --dataset {dataset} --out {root / 'DATASET'}`"
            if DATASET_PATTERN.match(dataset) else
            f"no evaluator for dataset {dataset!r}: evaluators exist only for named datasets ({listed}) in {root}"
        )
    net, cfg = load_evaluator(root / dataset, device)
    if cfg.dataset != dataset:
        raise EvaluatorError(f"{root / dataset / CONFIG}: says dataset {cfg.dataset!r}, not {dataset!r}")
    return net, cfg


# --- inputs and inference ------------------------------------------------------------------


def to_evaluator_input(images: torch.Tensor, channels: int, resolution: int) -> torch.Tensor:
    """uint8 images (B, C, H, W) → float32 (B, channels, resolution, resolution) in [-1, 1].

    Grey ↔ RGB by repetition / luma, size by antialiased bilinear resizing, so a 32×32
    or RGB checkpoint is judged by the 28×28 grey evaluator of its dataset.
    """
    x = images.float()
    if x.shape[1] != channels:
        if channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif channels == 1 and x.shape[1] == 3:
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise EvaluatorError(f"cannot feed {x.shape[1]}-channel images to a {channels}-channel evaluator")
    if x.shape[-2:] != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return x.div(127.5).sub(1.0)


@torch.inference_mode()
def features_and_logits(net: EvaluatorNet, images: torch.Tensor, batch_size: int = 1000,
                        device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, C, H, W) → (features (N, D) float64, logits (N, K) float64)."""
    feats, logits = [], []
    for chunk in images.split(batch_size):
        x = to_evaluator_input(chunk, net.channels, net.resolution).to(device)
        f = net.features(x)
        feats.append(f.cpu().double())
        logits.append(net.classifier(f).cpu().double())
    if not feats:
        return np.zeros((0, net.feature_dim)), np.zeros((0, net.num_classes))
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


# --- training --------------------------------------------------------------------------------


def augment(x: torch.Tensor, kind: str, gen: torch.Generator, fill: float = -1.0) -> torch.Tensor:
    """Random small affine warps of a float batch (B, C, H, W): ``shift`` (±2 px) or ``affine``
    (±10° rotation, ±10 % scale, ±2 px shift); ``none`` returns ``x``. Pixels shifted in are
    ``fill`` (−1 black, the background of the grey datasets; 1 white, emoji's)."""
    if kind == "none":
        return x
    b, _, h, _ = x.shape
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * (2.0 * 2 / h)  # grid units: 2 px
    if kind == "affine":
        angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(10)
        scale = 1 + (torch.rand(b, generator=gen) * 2 - 1) * 0.1
    elif kind == "shift":
        angle, scale = torch.zeros(b), torch.ones(b)
    else:
        raise ValueError(f"unknown augmentation {kind!r}")
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Padding with ``fill``: sample x − fill (zeros outside), add fill back.
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def accuracy(net: EvaluatorNet, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1000) -> tuple[float, np.ndarray]:
    """(overall accuracy, per-class accuracy (K,)) of ``net`` on uint8 images."""
    net.eval()
    _, logits = features_and_logits(net, images, batch_size)
    pred = logits.argmax(1)
    y = labels.numpy()
    per = np.array([(pred[y == k] == k).mean() if (y == k).any() else float("nan") for k in range(net.num_classes)])
    return float((pred == y).mean()), per


def train_evaluator(
    train_images: torch.Tensor, train_labels: torch.Tensor, num_classes: int, *, epochs: int = 10,
    batch_size: int = 128, lr: float = 2e-3, weight_decay: float = 5e-4, augment_kind: str = "shift", seed: int = 0,
    arch: dict[str, Any] | None = None, log: Any = None, fill: float = -1.0,
) -> EvaluatorNet:
    """Train an :class:`EvaluatorNet` on uint8 images (N, C, R, R): AdamW + one-cycle LR.

    The convolutions run channels-last (NHWC), oneDNN's faster layout on CPUs; the returned
    network is back in the default layout."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    _, c, r, _ = train_images.shape
    net = EvaluatorNet(channels=c, resolution=r, num_classes=num_classes, **(arch or {}))
    net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    n = train_images.shape[0]
    steps_per_epoch = max(1, n // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch))
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(n, generator=gen)
        t0, total, correct, seen = time.perf_counter(), 0.0, 0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * batch_size:(step + 1) * batch_size]
            x = augment(train_images[idx].float().div(127.5).sub(1.0), augment_kind, gen, fill)
            x = x.contiguous(memory_format=torch.channels_last)
            y = train_labels[idx]
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        if log is not None:
            log.info("epoch %d/%d: loss %.4f, train accuracy %.4f (augmented), %.1f s", epoch + 1, epochs,
                     total / seen, correct / seen, time.perf_counter() - t0)
    return net.to(memory_format=torch.contiguous_format).eval()
