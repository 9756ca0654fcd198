"""The shipped-checkpoint quality bars, on metrics with a known verdict."""

from tests.evaluation.conftest import make_checkpoint
from training.evaluation.bars import check, table

GOOD = {"num_samples": 10_000, "accuracy": 0.95, "sample_accuracy_real": 0.96,
        "accuracy_per_class": {"a": 0.9, "b": 0.85}, "coverage": 0.9, "memorization_fraction": 0.01,
        "modes_covered": 10, "num_modes": 10, "kl_to_uniform": 0.02}


def test_a_good_conditional_model_clears_every_bar():
    assert all(check(GOOD, conditional=True).values())


def test_each_bar_catches_its_failure():
    assert check({**GOOD, "accuracy": 0.90}, True)["accuracy ≥ 0.95 × real"] is False
    assert check({**GOOD, "accuracy_per_class": {"a": 0.99, "b": 0.79}}, True)["every class ≥ 0.8"] is False
    assert check({**GOOD, "coverage": 0.79}, True)["coverage ≥ 0.8"] is False
    assert check({**GOOD, "memorization_fraction": 0.03}, True)["memorisation ≤ 2 %"] is False
    assert check({**GOOD, "modes_covered": 9}, False)["all classes, KL ≤ 0.1"] is False
    assert check({**GOOD, "kl_to_uniform": 0.2}, False)["all classes, KL ≤ 0.1"] is False


def test_too_few_samples_or_missing_metrics_are_not_judged():
    assert set(check({**GOOD, "num_samples": 500}, True).values()) == {None}
    assert check({"num_samples": 10_000}, True)["coverage ≥ 0.8"] is None


def test_table_lists_checkpoints_and_says_when_unevaluated(tmp_path):
    make_checkpoint(tmp_path / "tiny")
    make_checkpoint(tmp_path / "auto", sampleable=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{")
    md = table(tmp_path)
    assert "| tiny | cgan | mnist | 1 |" in md and "not evaluated" in md
    assert "| broken | – |" in md and "unreadable" in md


def test_write_replaces_only_the_marked_section(tmp_path):
    from training.evaluation.bars import write_between_markers

    doc = tmp_path / "perf.md"
    doc.write_text("# Perf\nkeep\n<!-- bars:start -->\nold\n<!-- bars:end -->\ntail\n")
    write_between_markers(doc, "| new |")
    assert doc.read_text() == "# Perf\nkeep\n<!-- bars:start -->\n| new |\n<!-- bars:end -->\ntail\n"
    (tmp_path / "plain.md").write_text("no markers")
    import pytest

    with pytest.raises(ValueError, match="no <!-- bars:start -->"):
        write_between_markers(tmp_path / "plain.md", "x")


def test_per_class_relative_to_the_evaluator():
    from training.evaluation.bars import per_class_relative

    m = {**GOOD, "accuracy_per_class": {"a": 0.9, "shirt": 0.75}, "accuracy_per_class_real": {"a": 0.92, "shirt": 0.76}}
    assert check(m, True)["every class ≥ 0.8"] is False  # the bar as written
    assert per_class_relative(m) is True  # but as good as the evaluator can tell
    assert per_class_relative({**m, "accuracy_per_class": {"a": 0.5, "shirt": 0.75}}) is False
    assert per_class_relative({**m, "num_samples": 100}) is None and per_class_relative(GOOD) is None


def test_table_names_the_least_covered_class(tmp_path):
    import json

    folder = make_checkpoint(tmp_path / "tiny")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["metrics"] = {**GOOD, "coverage_floor": 0.97, "coverage_per_class": {"a": 0.91, "b": 0.62, "c": None}}
    (folder / "config.json").write_text(json.dumps(cfg))
    assert "| 0.900 (0.970), least: b 0.620 |" in table(tmp_path)
    cfg["metrics"] = {**GOOD, "coverage_floor": 0.97}  # evaluated before coverage per class existed
    (folder / "config.json").write_text(json.dumps(cfg))
    assert "| 0.900 (0.970) |" in table(tmp_path)


def test_table_names_a_models_truncation(tmp_path):
    from training.checkpoint import update_metrics

    tiny = make_checkpoint(tmp_path / "tiny")
    history = [{"epoch": 1, "seconds": 60.0, "bars_cleared": False}]  # evaluated while training, at ψ 1
    update_metrics(tiny, {**GOOD, "truncation": 0.75}, None, evaluations=history)
    make_checkpoint(tmp_path / "plain")
    md = table(tmp_path)
    assert ("| tiny (ψ 0.75) | cgan | mnist | 1 | 0 | not reached in 1 evaluation(s) at ψ 1; at ψ 0.75: 0 "
            "(its last epoch) |") in md
    assert "| plain | cgan |" in md


EMOJI = {"num_samples": 10_000, "evaluator": {"dataset": "emoji"}, "accuracy": 0.5, "sample_accuracy_real": 0.6,
         "accuracy_per_class": {"flags": 0.45, "symbols": 0.2}, "accuracy_per_class_real": {"flags": 0.9,
                                                                                             "symbols": 0.4},
         "coverage": 0.5, "memorization_fraction": 0.05}


def test_emoji_has_bars_relative_to_its_evaluator():
    bars = check(EMOJI, conditional=True)
    assert bars == {"accuracy ≥ 0.8 × real": True, "every class ≥ 0.5 × its real": True, "coverage ≥ 0.5": True,
                    "memorisation ≤ 5 %": True}
    assert check({**EMOJI, "accuracy": 0.47}, True)["accuracy ≥ 0.8 × real"] is False
    low = {**EMOJI, "accuracy_per_class": {"flags": 0.44, "symbols": 0.9}}  # flags below half of its real 0.9
    assert check(low, True)["every class ≥ 0.5 × its real"] is False
    assert check({**EMOJI, "coverage": 0.49}, True)["coverage ≥ 0.5"] is False
    assert check({**EMOJI, "memorization_fraction": 0.051}, True)["memorisation ≤ 5 %"] is False
    assert set(check({**EMOJI, "num_samples": 9_999}, True).values()) == {None}
