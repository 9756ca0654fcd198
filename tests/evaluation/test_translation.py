"""`evaluate` of translators on held-out pairs: stand-ins with a known answer, the command, its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.evaluation.conftest import DIGITS, StandIn, make_checkpoint
from tests.translator_fixture import write_translator
from training.checkpoint import read_config
from training.cli import main
from training.data import load_dataset
from training.evaluation import translation as T
from training.evaluation.evaluate import EvaluationError, evaluate_checkpoint

FAST = ["--threads", "1"]


@pytest.fixture
def translator(tmp_path: Path) -> Path:
    return write_translator(tmp_path, "mnist-edges", channels=1, resolution=32, dataset="mnist", class_names=DIGITS)


def run_with(monkeypatch: pytest.MonkeyPatch, ckpt: Path, root: Path, generators: dict[str, torch.nn.Module],
             **kwargs) -> dict:
    """Evaluate with stand-ins for the weights of the checkpoints named in ``generators`` (by folder name)."""
    monkeypatch.setattr(T, "load_generator", lambda path, device="cpu": (generators[Path(path).name],
                                                                        read_config(path)))
    metrics, _ = T.evaluate_translator(ckpt, evaluator_root=root, **kwargs)
    return metrics


def test_a_translator_that_returns_the_true_targets_scores_perfectly(monkeypatch, translator, evaluator_root, mnist):
    test32 = load_dataset("mnist", "test", 32, 1)
    m = run_with(monkeypatch, translator, evaluator_root, {"mnist-edges": StandIn(test32.images)})
    assert m["num_pairs"] == len(test32) == 500  # the whole (small) test split
    assert m["l1"] == 0 and m["fid"] == pytest.approx(0, abs=1e-3)
    assert m["accuracy"] == m["sample_accuracy_real"] > 0.85
    assert m["accuracy_per_class"] == m["accuracy_per_class_real"]
    assert m["checkerboard_ratio"] == pytest.approx(1.0)
    assert m["fid_floor"] > 0.1 and m["transform"] == "edges"


def test_a_baseline_that_draws_one_blur_is_worse_on_the_same_pairs(monkeypatch, tmp_path, translator, evaluator_root,
                                                                   mnist):
    base = write_translator(tmp_path, "mnist-edges-l1", channels=1, resolution=32, dataset="mnist",
                            class_names=DIGITS)
    test32 = load_dataset("mnist", "test", 32, 1)
    blur = test32.images.float().mean(0, keepdim=True).round().to(torch.uint8)  # the mean digit, for every input
    m = run_with(monkeypatch, translator, evaluator_root,
                 {"mnist-edges": StandIn(test32.images), "mnist-edges-l1": StandIn(blur)}, baseline=base)
    b = m["baseline"]
    assert b["name"] == "mnist-edges-l1" and b["training"]["command"] == "tests"
    assert b["fid"] > m["fid_floor"] > m["fid"] and b["l1"] > 0.05 and b["accuracy"] < 0.5
    assert set(b) >= {"l1", "fid", "accuracy", "checkerboard_ratio", "generator_sha256", "l1_only"}


def test_fewer_pairs_are_a_seeded_subset_of_the_test_split(translator):
    cfg = read_config(translator)
    _, inputs, idx = T.held_out_pairs(cfg, 200, seed=3)
    again = T.held_out_pairs(cfg, 200, seed=3)
    assert len(idx) == 200 and len(set(idx.tolist())) == 200 and torch.equal(inputs, again[1])
    assert not (idx == T.held_out_pairs(cfg, 200, seed=4)[2]).all()


def test_evaluate_command_writes_translator_metrics(translator, evaluator_root, capsys, tmp_path):
    other = write_translator(tmp_path, "other", channels=1, resolution=32, dataset="mnist", class_names=DIGITS,
                             seed=1)
    args = ["evaluate", str(translator), "--samples", "100", "--evaluators", str(evaluator_root), *FAST]
    before = (translator / "config.json").read_bytes()
    assert main([*args, "--no-write", "--baseline", str(other)]) == 0
    out = capsys.readouterr().out
    assert "100 held-out pairs (edges → image)" in out and "baseline other" in out and "L1 to the targets" in out
    assert (translator / "config.json").read_bytes() == before
    assert main([*args, "--baseline", str(other)]) == 0
    m = read_config(translator).metrics
    assert m["num_pairs"] == 100 and 0 < m["l1"] < 1 and m["fid"] > 0 and m["baseline"]["name"] == "other"
    assert m["evaluator"]["dataset"] == "mnist"
    capsys.readouterr()
    assert main([*args, "--no-write", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["l1"] == m["l1"]  # the same pairs, the same numbers


def test_translator_refusals_are_one_line_errors(translator, evaluator_root, capsys, tmp_path):
    base = ["evaluate", str(translator), "--evaluators", str(evaluator_root), "--no-write", *FAST]
    assert main([*base, "--truncation", "0.5"]) == 2
    assert "--truncation" in capsys.readouterr().err
    grey = write_translator(tmp_path, "rgb", channels=3, resolution=32, dataset="mnist", class_names=DIGITS)
    assert main([*base, "--baseline", str(grey)]) == 2
    assert "--baseline" in capsys.readouterr().err
    assert main([*base, "--baseline", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "--baseline" in err and "Traceback" not in err
    gan = make_checkpoint(tmp_path / "gan")
    assert main(["evaluate", str(gan), "--baseline", str(translator), "--evaluators", str(evaluator_root)]) == 2
    assert "--baseline measures translators only" in capsys.readouterr().err
    with pytest.raises(EvaluationError, match="held-out pairs"):
        evaluate_checkpoint(translator, evaluator_root=evaluator_root)
