"""The evaluator network, its folder format and the ``train-evaluator`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.checkpoint import sha256_bytes
from training.cli import main
from training.data import load_dataset
from training.evaluation.evaluator import (
    CONFIG,
    REPO_EVALUATORS,
    WEIGHTS,
    EvaluatorError,
    EvaluatorNet,
    accuracy,
    augment,
    available_evaluators,
    evaluator_for,
    load_evaluator,
)


def test_network_shapes_and_features() -> None:
    net = EvaluatorNet(width=4, feature_dim=16).eval()
    x = torch.randn(3, 1, 28, 28)
    assert net(x).shape == (3, 10)
    f = net.features(x)
    assert f.shape == (3, 16) and (f >= 0).all()  # post-ReLU features
    assert torch.allclose(net.classifier(f), net(x))  # eval mode: dropout is off
    assert EvaluatorNet(channels=3, resolution=32, num_classes=6, width=4)(torch.randn(2, 3, 32, 32)).shape == (2, 6)


def test_augment_keeps_shape_range_and_identity_for_none() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    assert augment(x, "none", g) is x
    for kind in ("shift", "affine"):
        y = augment(x, kind, g)
        assert y.shape == x.shape and y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5
    with pytest.raises(ValueError):
        augment(x, "warp", g)


def test_train_evaluator_command_writes_a_loadable_evaluator(tmp_path: Path, capsys) -> None:
    out = tmp_path / "synthetic"
    args = ["train-evaluator", "--dataset", "synthetic", "--out", str(out), "--epochs", "6", "--width", "4",
            "--feature-dim", "8", "--batch-size", "32", "--lr", "0.005", "--threads", "1"]
    assert main(args) == 0
    assert "test accuracy" in capsys.readouterr().out
    raw = json.loads((out / CONFIG).read_text())
    assert raw["training"]["command"].startswith("python -m training train-evaluator --dataset synthetic")
    assert "--epochs 6" in raw["training"]["command"] and raw["training"]["seconds"] > 0
    assert raw["weights_sha256"] == sha256_bytes((out / WEIGHTS).read_bytes())
    assert raw["feature_dim"] == 8 and raw["architecture"]["kwargs"]["width"] == 4
    net, cfg = load_evaluator(out)
    test = load_dataset("synthetic", "test", 28, 1)
    acc, _ = accuracy(net, test.images, test.labels)
    assert acc == pytest.approx(cfg.test_accuracy, abs=1e-6)  # the recorded accuracy is the shipped weights'
    assert acc > 1 / 6 + 0.1  # learned something about the shapes in a few short epochs
    assert available_evaluators(tmp_path) == ["synthetic"]
    net2, _ = evaluator_for("synthetic", tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values(), strict=True))


def test_evaluator_for_names_what_exists(tmp_path: Path) -> None:
    with pytest.raises(EvaluatorError, match="evaluators exist for: none"):
        evaluator_for("mnist", tmp_path)
    with pytest.raises(EvaluatorError, match="only for named datasets"):
        evaluator_for("../mnist", tmp_path)


def test_missing_weights_and_wrong_architecture(tmp_path: Path) -> None:
    src = tmp_path / "src"
    assert main(["train-evaluator", "--dataset", "synthetic", "--out", str(src), "--epochs", "1", "--width", "2",
                 "--feature-dim", "4", "--threads", "1"]) == 0
    raw = json.loads((src / CONFIG).read_text())
    raw["architecture"]["kwargs"]["width"] = 3
    (src / CONFIG).write_text(json.dumps(raw))
    with pytest.raises(EvaluatorError, match="do not match"):
        load_evaluator(src)
    (src / WEIGHTS).unlink()
    with pytest.raises(EvaluatorError, match="missing"):
        load_evaluator(src)


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_shipped_evaluators_load_and_meet_their_bar(dataset: str) -> None:
    """The evaluators shipped in checkpoints/evaluators/ load (sha256-checked) and record their accuracy."""
    if dataset not in available_evaluators(REPO_EVALUATORS):
        pytest.skip(f"no shipped {dataset} evaluator yet")
    net, cfg = load_evaluator(REPO_EVALUATORS / dataset)
    assert cfg.dataset == dataset and cfg.feature_dim == net.feature_dim
    assert cfg.test_accuracy >= {"mnist": 0.98, "fashion-mnist": 0.92}[dataset]
    assert (REPO_EVALUATORS / dataset / WEIGHTS).stat().st_size < 3_000_000
