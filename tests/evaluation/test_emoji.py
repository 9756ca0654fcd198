"""The emoji path end to end on the tiny fixture (never the download): a 64×64 RGB evaluator trained by
``train-evaluator --dataset emoji``, and a 64×64 RGB cGAN trained with ``--eval-every`` whose every
``evaluate`` metric is computed against it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.emoji_fixture import make_emoji_dir
from training.checkpoint import read_config
from training.cli import main
from training.data import EMOJI_CATEGORIES
from training.evaluation.evaluator import CONFIG, augment, load_evaluator


def test_augment_fills_with_the_background() -> None:
    g = torch.Generator().manual_seed(0)
    white = torch.ones(4, 3, 16, 16)
    for kind in ("shift", "affine"):
        assert torch.allclose(augment(white, kind, g, fill=1.0), white, atol=1e-5)  # white stays white
        assert augment(white, kind, g).min() < 0.5  # the grey datasets' black comes in at the edges


@pytest.fixture(scope="module")
def emoji_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_emoji_dir(tmp_path_factory.mktemp("data") / "emoji")


@pytest.fixture(scope="module")
def evaluators(tmp_path_factory: pytest.TempPathFactory, emoji_root: Path) -> Path:
    root = tmp_path_factory.mktemp("evaluators")
    assert main(["train-evaluator", "--dataset", "emoji", "--data-dir", str(emoji_root), "--out",
                 str(root / "emoji"), "--epochs", "2", "--width", "2", "--feature-dim", "8", "--batch-size", "16",
                 "--threads", "1"]) == 0
    return root


def test_emoji_evaluator_is_64x64_rgb_with_per_class_accuracy(evaluators: Path) -> None:
    net, cfg = load_evaluator(evaluators / "emoji")
    assert (cfg.resolution, cfg.channels, net.resolution, net.channels) == (64, 3, 64, 3)
    assert cfg.class_names == EMOJI_CATEGORIES and cfg.num_test == 8
    assert set(cfg.test_accuracy_per_class) == set(EMOJI_CATEGORIES)
    raw = json.loads((evaluators / "emoji" / CONFIG).read_text())
    assert "--dataset emoji" in raw["training"]["command"] and "--augment affine" in raw["training"]["command"]


def test_emoji_cgan_gets_every_metric(tmp_path: Path, monkeypatch, emoji_root: Path, evaluators: Path) -> None:
    monkeypatch.setenv("GANSERVE_EVALUATORS", str(evaluators))
    monkeypatch.setenv("GANSERVE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "emoji-cgan"
    assert main(["train", "--family", "cgan", "--dataset", "emoji", "--data-dir", str(emoji_root),
                 "--resolution", "64", "--channels", "3", "--width", "4", "--z-dim", "8", "--batch-size", "16",
                 "--epochs", "1", "--diffaugment", "color,translation,cutout", "--channels-last", "--threads", "1",
                 "--eval-every", "1", "--eval-samples", "100", "--keep-best", "min_class_accuracy",
                 "--out", str(out), "--run-dir", str(tmp_path / "run"), "--no-progress", "--no-tensorboard"]) == 0
    cfg = read_config(out)
    assert cfg.class_names == EMOJI_CATEGORIES and (cfg.image.height, cfg.image.channels) == (64, 3)
    assert "Noto Emoji" in cfg.description and "Apache" in cfg.description  # the model card credits the images
    assert "Twemoji" in cfg.description and "CC BY 4.0" in cfg.description
    m = cfg.metrics
    for key in ("fid", "fid_floor", "kid", "precision", "recall", "density", "coverage", "precision_floor",
                "coverage_floor", "accuracy", "sample_accuracy_real", "memorization_fraction",
                "memorization_threshold", "checkerboard_ratio"):
        assert isinstance(m[key], float) and math.isfinite(m[key]), key
    assert set(m["accuracy_per_class"]) == set(EMOJI_CATEGORIES)
    assert m["num_real"] == 8 and m["evaluator"]["dataset"] == "emoji"
    assert 0 <= m["memorization_fraction"] <= 1 and m["checkerboard_ratio"] > 0


def test_shipped_emoji_evaluator_is_64x64_rgb() -> None:
    """The shipped evaluator of checkpoints/evaluators/emoji loads (sha256-checked) and records its real-test
    accuracy overall and per class; with the images fetched, the recorded accuracy is the weights' own."""
    from training.data import DatasetError, load_dataset
    from training.evaluation.evaluator import REPO_EVALUATORS, WEIGHTS, accuracy

    net, cfg = load_evaluator(REPO_EVALUATORS / "emoji")
    assert (cfg.resolution, cfg.channels, cfg.dataset) == (64, 3, "emoji") and cfg.class_names == EMOJI_CATEGORIES
    assert set(cfg.test_accuracy_per_class) == set(EMOJI_CATEGORIES) and cfg.num_test == 574
    assert (REPO_EVALUATORS / "emoji" / WEIGHTS).stat().st_size < 3_000_000
    try:
        test = load_dataset("emoji", "test", 64, 3)
    except DatasetError:
        return  # scripts/fetch_emoji.sh has not run here: the recorded numbers cannot be re-measured
    acc, _ = accuracy(net, test.images, test.labels)
    assert acc == pytest.approx(cfg.test_accuracy, abs=1e-6)
