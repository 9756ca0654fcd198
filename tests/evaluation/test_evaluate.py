"""The evaluate pipeline and command end to end: stand-in generators with a known failure are
caught by the metric meant for them; the command writes metrics; error paths are one-liners."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.evaluation.conftest import DIGITS, StandIn, by_class, checkerboard, make_checkpoint
from training.checkpoint import read_config
from training.cli import main
from training.evaluation import evaluate as E
from training.evaluation.evaluator import WEIGHTS, EvaluatorError, load_evaluator

N = 1000  # samples per evaluation: enough for stable numbers, a couple of seconds each
FAST = ["--threads", "1", "--kid-subsets", "10"]


def run_with(monkeypatch: pytest.MonkeyPatch, ckpt: Path, root: Path, generator: torch.nn.Module,
             n: int = N) -> dict:
    """Evaluate the checkpoint's config with ``generator`` standing in for its weights."""
    monkeypatch.setattr(E, "load_generator", lambda path, device="cpu": (generator, read_config(path)))
    metrics, _ = E.evaluate_checkpoint(ckpt, num_samples=n, evaluator_root=root, kid_subsets=20)
    return metrics


@pytest.fixture
def cond_ckpt(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "cond")


@pytest.fixture
def uncond_ckpt(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "uncond", conditional=False)


def test_real_images_score_like_the_floor(monkeypatch, cond_ckpt, evaluator_root, mnist) -> None:
    """A "generator" that returns unseen real images: every metric sits at its real-data value."""
    _, test = mnist
    m = run_with(monkeypatch, cond_ckpt, evaluator_root, StandIn(by_class(test)), n=500)
    # Real test vs itself would give FID 0; the floor (train subset vs test) is the honest reference.
    assert m["fid"] < m["fid_floor"]
    assert m["accuracy"] == pytest.approx(m["sample_accuracy_real"], abs=1e-9)
    assert m["memorization_fraction"] <= 0.02
    assert m["checkerboard_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert m["modes_covered"] == 10 and m["kl_to_uniform"] < 0.01


def test_training_copies_match_the_floor_and_are_memorised(monkeypatch, cond_ckpt, evaluator_root, mnist) -> None:
    train, _ = mnist
    m = run_with(monkeypatch, cond_ckpt, evaluator_root, StandIn(by_class(train)))
    assert m["fid"] == pytest.approx(m["fid_floor"], rel=0.35)  # real vs real, same counts
    assert m["kid"] == pytest.approx(m["kid_floor"], abs=3 * m["kid_std"] + 1e-3)
    assert m["precision"] > 0.5 and m["coverage"] > 0.5
    assert m["memorization_fraction"] == 1.0
    assert m["accuracy"] > 0.85


def test_collapse_to_one_class_is_caught(monkeypatch, uncond_ckpt, evaluator_root, mnist) -> None:
    train, _ = mnist
    ones = train.images[train.labels == 1]
    m = run_with(monkeypatch, uncond_ckpt, evaluator_root, StandIn(ones))
    assert m["accuracy"] is None  # unconditional: no intended labels
    assert m["modes_covered"] == 1
    assert max(m["class_histogram"].values()) == m["class_histogram"]["one"] > 0.9
    assert m["kl_to_uniform"] > 0.8 * math.log(10)
    assert m["coverage"] < 0.25 and m["recall"] < 0.25
    assert m["fid"] > 10 * m["fid_floor"]


def test_dropped_classes_are_caught(monkeypatch, cond_ckpt, evaluator_root, mnist) -> None:
    train, _ = mnist
    pools = by_class(train)
    dropped = {k: pools[k] if k < 6 else pools[k - 6] for k in range(10)}  # 6..9 come out as 0..3
    m = run_with(monkeypatch, cond_ckpt, evaluator_root, StandIn(dropped))
    assert m["modes_covered"] == 6
    per = m["accuracy_per_class"]
    assert all(per[DIGITS[k]] < 0.1 for k in range(6, 10))
    assert all(per[DIGITS[k]] > 0.7 for k in range(6))
    assert m["accuracy"] < 0.65
    # Coverage by class says which part of the real data no sample comes near.
    cov, floor = m["coverage_per_class"], m["coverage_per_class_floor"]
    assert all(cov[DIGITS[k]] < 0.3 for k in range(6, 10)), cov
    assert all(cov[DIGITS[k]] > 0.8 for k in range(6)), cov
    assert all(floor[d] > 0.5 for d in DIGITS), floor


def test_faint_checkerboard_is_caught(monkeypatch, uncond_ckpt, evaluator_root, mnist) -> None:
    _, test = mnist
    # ±13 grey levels (before clipping to [-1, 1]): faint to the eye, 5× the real Nyquist energy share.
    m = run_with(monkeypatch, uncond_ckpt, evaluator_root, StandIn(test.images, checkerboard(28, 28, 0.1)), n=500)
    assert m["checkerboard_ratio"] > 3
    assert m["memorization_fraction"] < 0.05


def test_class_subset_checkpoint_is_judged_on_its_own_classes(monkeypatch, tmp_path, evaluator_root, mnist) -> None:
    ckpt = make_checkpoint(tmp_path / "sub", classes=["three", "seven"])
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["training"]["options"] = {"classes": [3, 7]}
    (ckpt / "config.json").write_text(json.dumps(cfg))
    train, _ = mnist
    gen = StandIn({0: train.images[train.labels == 3], 1: train.images[train.labels == 7]})
    m = run_with(monkeypatch, ckpt, evaluator_root, gen, n=200)
    assert list(m["class_histogram"]) == ["three", "seven"] and m["num_modes"] == 2
    assert m["num_real"] == 100  # 50 held-out images per digit
    assert m["accuracy"] > 0.9 and m["memorization_fraction"] == 1.0


# --- the command ---------------------------------------------------------------------------


def test_evaluate_command_writes_metrics(cond_ckpt, evaluator_root, capsys) -> None:
    before = (cond_ckpt / "config.json").read_bytes()
    args = ["evaluate", str(cond_ckpt), "--samples", "200", "--evaluators", str(evaluator_root), *FAST]
    assert main([*args, "--no-write"]) == 0
    assert "FID" in capsys.readouterr().out
    assert (cond_ckpt / "config.json").read_bytes() == before
    assert main(args) == 0
    cfg = read_config(cond_ckpt)
    _, ecfg = load_evaluator(evaluator_root / "mnist")
    assert cfg.evaluator_sha256 == ecfg.weights_sha256 == cfg.metrics["evaluator"]["sha256"]
    m = cfg.metrics
    for key in ("fid", "fid_floor", "kid", "kid_floor", "precision", "recall", "density", "coverage", "accuracy",
                "sample_accuracy_real", "memorization_fraction", "checkerboard_ratio", "kl_to_uniform"):
        assert isinstance(m[key], float), key
    assert m["num_samples"] == 200 and m["modes_covered"] <= 10
    assert set(m["accuracy_per_class"]) == set(DIGITS) == set(m["class_histogram"])
    # An untrained generator is far from the data.
    assert m["fid"] > 5 * m["fid_floor"]
    json.dumps(m, allow_nan=False)  # valid JSON for the service (no NaN)


def test_evaluate_json_output_is_deterministic(uncond_ckpt, evaluator_root, capsys) -> None:
    args = ["evaluate", str(uncond_ckpt), "--samples", "100", "--evaluators", str(evaluator_root), "--no-write",
            "--json", *FAST]
    outs = []
    for _ in range(2):
        assert main(args) == 0
        m = json.loads(capsys.readouterr().out)
        outs.append({k: v for k, v in m.items() if k not in ("evaluated_at", "seconds")})
    assert outs[0] == outs[1]
    assert outs[0]["accuracy"] is None


def test_unknown_dataset_evaluator_is_a_clear_error(tmp_path, evaluator_root, capsys) -> None:
    ckpt = make_checkpoint(tmp_path / "fash", dataset="fashion-mnist",
                           classes=["t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                                    "sneaker", "bag", "ankle-boot"])
    assert main(["evaluate", str(ckpt), "--evaluators", str(evaluator_root), "--no-write"]) == 2
    err = capsys.readouterr().err
    assert "no evaluator for dataset 'fashion-mnist'" in err and "mnist" in err and "Traceback" not in err


def test_folder_dataset_has_no_evaluator(tmp_path, evaluator_root, capsys) -> None:
    ckpt = make_checkpoint(tmp_path / "faces", dataset="folder:/data/faces", classes=["a", "b"])
    assert main(["evaluate", str(ckpt), "--evaluators", str(evaluator_root), "--no-write"]) == 2
    assert "no evaluator for dataset 'folder:/data/faces'" in capsys.readouterr().err


def test_unsampleable_checkpoint_is_a_clear_error(tmp_path, evaluator_root, capsys) -> None:
    ckpt = make_checkpoint(tmp_path / "ae", conditional=False, sampleable=False)
    assert main(["evaluate", str(ckpt), "--evaluators", str(evaluator_root)]) == 2
    assert "reconstruction only" in capsys.readouterr().err
    assert read_config(ckpt).metrics == {}


def test_corrupt_evaluator_is_a_clear_error(tmp_path, evaluator_root, cond_ckpt, capsys) -> None:
    bad_root = tmp_path / "evaluators"
    (bad_root / "mnist").mkdir(parents=True)
    for f in ("config.json", WEIGHTS):
        (bad_root / "mnist" / f).write_bytes((evaluator_root / "mnist" / f).read_bytes())
    w = bad_root / "mnist" / WEIGHTS
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(EvaluatorError, match="sha256"):
        load_evaluator(bad_root / "mnist")
    assert main(["evaluate", str(cond_ckpt), "--evaluators", str(bad_root)]) == 2
    err = capsys.readouterr().err
    assert "error: evaluator:" in err and "sha256" in err
    assert read_config(cond_ckpt).metrics == {}
    w.write_bytes(b"not safetensors")
    with pytest.raises(EvaluatorError):
        load_evaluator(bad_root / "mnist")
    (bad_root / "mnist" / "config.json").write_text("{}")
    with pytest.raises(EvaluatorError, match="invalid"):
        load_evaluator(bad_root / "mnist")


def test_missing_checkpoint_and_bad_device_are_clear_errors(tmp_path, evaluator_root, cond_ckpt, capsys) -> None:
    assert main(["evaluate", str(tmp_path / "nope"), "--evaluators", str(evaluator_root)]) == 2
    assert "error: checkpoint:" in capsys.readouterr().err
    assert main(["evaluate", str(cond_ckpt), "--device", "tpu:7", "--threads", "1"]) == 2
    assert "--device" in capsys.readouterr().err


def test_bad_options_are_argparse_errors(cond_ckpt, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(cond_ckpt), "--samples", "3"])
    assert exc.value.code == 2 and "--samples" in capsys.readouterr().err


def test_generate_uint8_cycles_labels_and_uses_the_seed_rule() -> None:
    seen: list[torch.Tensor] = []

    class Echo(torch.nn.Module):
        def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            seen.append(z.clone())
            return torch.zeros(z.shape[0], 1, 4, 4)

    imgs, labels = E.generate_uint8(Echo(), 3, 4, 10, seed=5, batch_size=4)
    assert imgs.shape == (10, 1, 4, 4) and imgs.dtype == torch.uint8 and int(imgs[0, 0, 0, 0]) == 128
    assert labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    from training.latent import latents

    assert torch.equal(torch.cat(seen), latents(list(range(5, 15)), 3))
    seen.clear()
    E.generate_uint8(Echo(), 3, 0, 6, seed=2, batch_size=4, truncation=0.25)  # z scaled by ψ
    assert torch.equal(torch.cat(seen), latents(list(range(2, 8)), 3) * 0.25)


def test_evaluator_input_adapts_size_and_channels() -> None:
    from training.evaluation.evaluator import to_evaluator_input

    rgb32 = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    x = to_evaluator_input(rgb32, 1, 28)
    assert x.shape == (2, 1, 28, 28) and torch.allclose(x, torch.ones_like(x), atol=1e-4)




def test_the_real_side_is_computed_once_per_dataset_and_settings(cond_ckpt, uncond_ckpt, evaluator_root) -> None:
    """Many checkpoints of one dataset in a process (experiments, --eval-every) share the real-image
    half of the work; the numbers are the same as a fresh computation's."""
    E._REAL_CACHE.clear()
    kw = {"num_samples": 200, "evaluator_root": evaluator_root, "kid_subsets": 10}
    fresh, _ = E.evaluate_checkpoint(cond_ckpt, **kw)
    assert len(E._REAL_CACHE) == 1
    again, _ = E.evaluate_checkpoint(cond_ckpt, **kw)
    other, _ = E.evaluate_checkpoint(uncond_ckpt, **kw)
    assert len(E._REAL_CACHE) == 1 and next(iter(E._REAL_CACHE.values())).hits == 3
    drop = {"evaluated_at", "seconds"}
    assert {k: v for k, v in again.items() if k not in drop} == {k: v for k, v in fresh.items() if k not in drop}
    assert other["fid_floor"] == fresh["fid_floor"]
    assert other["memorization_threshold"] == fresh["memorization_threshold"]
    E.evaluate_checkpoint(cond_ckpt, **{**kw, "num_samples": 300})  # another floor size: another entry
    assert len(E._REAL_CACHE) == 2
    E._REAL_CACHE.clear()
    cold, _ = E.evaluate_checkpoint(cond_ckpt, **kw)
    assert {k: v for k, v in cold.items() if k not in drop} == {k: v for k, v in fresh.items() if k not in drop}


def test_truncation_is_measured_then_served_as_the_default(uncond_ckpt, evaluator_root, tmp_path, capsys) -> None:
    """`evaluate --truncation ψ` draws its samples at ψ and makes ψ the checkpoint's default; later
    evaluations and `sample` then use it unless told otherwise."""
    assert read_config(uncond_ckpt).truncation == 1.0
    args = ["evaluate", str(uncond_ckpt), "--samples", "100", "--evaluators", str(evaluator_root), *FAST]
    assert main([*args, "--no-write", "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert main([*args, "--truncation", "0.5"]) == 0
    assert "truncation ψ 0.5" in capsys.readouterr().out
    cfg = read_config(uncond_ckpt)
    assert cfg.truncation == 0.5 and cfg.metrics["truncation"] == 0.5
    assert cfg.metrics["fid"] != full["fid"] and full["truncation"] == 1.0  # other samples, other numbers
    assert main([*args, "--no-write", "--json"]) == 0  # no flag: the checkpoint's own ψ
    again = json.loads(capsys.readouterr().out)
    assert again["truncation"] == 0.5 and again["fid"] == cfg.metrics["fid"]

    def sample(*extra: str) -> bytes:
        out = tmp_path / f"s{len(extra)}{'-'.join(extra)}.png"
        assert main(["sample", str(uncond_ckpt), "--seed", "3", "--n", "4", "--out", str(out), *extra]) == 0
        return out.read_bytes()

    assert sample() == sample("--truncation", "0.5") != sample("--truncation", "1")


def test_truncation_outside_0_1_is_a_flag_error(uncond_ckpt, capsys) -> None:
    for bad in ("0", "1.5", "nan", "x"):
        with pytest.raises(SystemExit) as e:
            main(["evaluate", str(uncond_ckpt), "--truncation", bad])
        assert e.value.code == 2 and "--truncation" in capsys.readouterr().err
