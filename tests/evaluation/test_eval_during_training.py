"""``train --eval-every``: the checkpoint is measured during training, the history is kept
across ``--resume``, and ``bars`` turns it into minutes to the bars."""

from __future__ import annotations

import pytest

from tests.evaluation.conftest import needs_mnist
from training.checkpoint import read_config
from training.cli import main
from training.evaluation.bars import time_to_bars

TINY = ["--family", "mlp-gan", "--dataset", "mnist", "--batch-size", "256", "--threads", "1", "--no-progress",
        "--no-tensorboard", "--eval-samples", "100"]


@needs_mnist
def test_evaluations_are_recorded_and_survive_resume(tmp_path, monkeypatch, evaluator_root) -> None:
    monkeypatch.setenv("GANSERVE_EVALUATORS", str(evaluator_root))
    out, run = tmp_path / "ck", tmp_path / "run"
    common = [*TINY, "--out", str(out), "--run-dir", str(run), "--eval-every", "2"]
    assert main(["train", *common, "--epochs", "3"]) == 0
    cfg = read_config(out)
    evals = cfg.training.evaluations
    # every 2 epochs and after the last one
    assert [e["epoch"] for e in evals] == [2, 3]
    assert 0 < evals[0]["seconds"] < evals[1]["seconds"] <= cfg.training.seconds + 0.1
    assert evals[1]["images_seen"] == cfg.training.images_seen
    for e in evals:
        assert 0 <= e["coverage"] <= 1 and e["fid"] > 0 and e["modes_covered"] <= 10
        # 100 samples are too few for a verdict: nothing is called cleared
        assert set(e["bars"].values()) == {None} and e["bars_cleared"] is False
    # The last evaluation's full metrics are the checkpoint's metrics, as `evaluate` would write them.
    assert cfg.metrics["num_samples"] == 100 and cfg.metrics["fid"] == evals[-1]["fid"]
    assert cfg.evaluator_sha256 == cfg.metrics["evaluator"]["sha256"]

    assert main(["train", *common, "--epochs", "4", "--resume"]) == 0
    done = read_config(out)
    evals2 = done.training.evaluations
    assert [e["epoch"] for e in evals2] == [2, 3, 4] and evals2[:2] == evals

    # Re-running the finished command (e.g. to record it) rewrites the same weights: the metrics stay.
    assert main(["train", *common, "--epochs", "4", "--resume"]) == 0
    again = read_config(out)
    assert again.generator_sha256 == done.generator_sha256
    assert again.metrics == done.metrics and again.evaluator_sha256 == done.evaluator_sha256


def test_eval_every_needs_an_evaluator_and_a_sampleable_family(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--family", "dcgan", "--dataset", f"folder:{tmp_path}", "--out", str(tmp_path / "x"),
              "--eval-every", "1"])  # a user's own images: no evaluator
    assert "--eval-every needs a dataset with an evaluator" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--family", "ae", "--dataset", "fashion-mnist", "--out", str(tmp_path / "x"),
              "--eval-every", "1"])
    assert "--eval-every: --family ae" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--family", "dcgan", "--dataset", "mnist", "--out", str(tmp_path / "x"),
              "--eval-samples", "5"])
    assert "--eval-samples" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_time_to_bars_is_the_first_evaluation_that_cleared_everything() -> None:
    evals = [{"epoch": 2, "seconds": 120.0, "bars_cleared": False},
             {"epoch": 4, "seconds": 250.0, "bars_cleared": True},
             {"epoch": 6, "seconds": 370.0, "bars_cleared": True}]
    assert time_to_bars(evals) == "4.2 (epoch 4)"
    assert time_to_bars(evals[:1]) == "not reached in 1 evaluation(s)"
    assert time_to_bars([]) == "–"
    assert time_to_bars(evals, before=600.0) == "14.2 (epoch 4)"  # a fine-tune: + its source's training


def test_a_fine_tunes_minutes_count_the_generator_it_started_from() -> None:
    from training.checkpoint import GeneratorSource, TrainingInfo
    from training.evaluation.bars import _train_minutes

    evals = [{"epoch": 2, "seconds": 240.0, "bars_cleared": True}]
    own = TrainingInfo(command="c", epochs=2, seconds=300.0, seed=0, evaluations=evals)
    assert _train_minutes(own) == ("5", "4.0 (epoch 2)")
    src = GeneratorSource(folder="checkpoints/x", name="x", generator_sha256="0" * 64, command="c0", epochs=40,
                          seconds=6000.0)
    tuned = own.model_copy(update={"init_g_from": src})
    assert _train_minutes(tuned) == ("105 (100 as x + 5)", "104.0 (epoch 2)")
