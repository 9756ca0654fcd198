"""evaluate-encoding: reconstruction PSNR on the test split and the evaluator's verdict on encoded images,
checked against reconstructions whose outcome is known (the originals themselves, blank images), then
end to end on real checkpoints: an autoencoder with its encoder, and projection into a cGAN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import training.evaluation.reconstruction as R
from tests.evaluation.conftest import DIGITS, make_checkpoint
from training.checkpoint import read_config, save_checkpoint
from training.cli import main
from training.models.encoders import MLPEncoder
from training.models.mlp import MLPGenerator


def make_ae(out: Path) -> Path:
    """An untrained fully connected autoencoder of MNIST with its encoder."""
    torch.manual_seed(0)
    kwargs = {"z_dim": 8, "num_classes": 0, "channels": 1, "resolution": 28, "hidden": [16]}
    config = {
        "name": out.name, "family": "ae", "generator": {"class": "MLPGenerator", "kwargs": kwargs},
        "z_dim": 8, "num_classes": 0, "class_names": [], "image": {"channels": 1, "height": 28, "width": 28},
        "sampleable": False, "dataset": {"name": "mnist", "num_images": 4500, "class_names": DIGITS},
        "training": {"command": "test", "epochs": 1, "seconds": 1.0, "seed": 0},
    }
    save_checkpoint(out, MLPGenerator(**kwargs), config, encoder=(MLPEncoder(1, 28, [16], 8), "code"))
    return out


def test_psnr_of_known_images() -> None:
    a = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    b = a.clone()
    b[0] += 255  # all pixels off by 255: MSE 255², PSNR 0
    b[1, 0, 0, 0] = 16  # one of 16 pixels off by 16: MSE 16, PSNR 10·log10(255²/16)
    assert np.allclose(R.psnr(b, a), [0.0, 10 * np.log10(255**2 / 16)])


def test_perfect_and_blank_reconstructions_score_as_they_must(tmp_path, evaluator_root, mnist, monkeypatch) -> None:
    ckpt = make_ae(tmp_path / "ae")
    _, test = mnist
    monkeypatch.setattr(R, "reconstruct", lambda g, e, images, b, d: images.clone())  # the originals themselves
    perfect, _ = R.evaluate_encoding(ckpt, images=100, evaluator_root=evaluator_root)
    enc = perfect["encoding"]
    assert enc["method"] == "encoder" and enc["images"] == 100 and enc["steps"] == 0
    assert enc["agrees_with_original"] == 1.0 and enc["class_accuracy"] == enc["evaluator_on_originals"] > 0.8
    assert perfect["reconstruction"]["images"] == len(test) and perfect["reconstruction"]["psnr"] > 100

    monkeypatch.setattr(R, "reconstruct", lambda g, e, images, b, d: torch.zeros_like(images))  # black
    blank, _ = R.evaluate_encoding(ckpt, images=100, evaluator_root=evaluator_root)
    assert blank["encoding"]["class_accuracy"] < 0.3  # one class for every image
    assert blank["encoding"]["evaluator_on_originals"] == enc["evaluator_on_originals"]  # the same seeded pick
    assert 5 < blank["reconstruction"]["psnr"] < 20


def test_evaluate_encoding_writes_an_autoencoders_metrics(tmp_path, evaluator_root, capsys) -> None:
    ckpt = make_ae(tmp_path / "ae")
    args = ["evaluate-encoding", str(ckpt), "--images", "50", "--evaluators", str(evaluator_root)]
    assert main([*args, "--no-write"]) == 0
    printed = json.loads(capsys.readouterr().out.split("\nwrote")[0])
    assert read_config(ckpt).metrics == {}
    assert main(args) == 0
    m = read_config(ckpt).metrics
    assert m["encoding"]["method"] == "encoder" and m["reconstruction"]["split"] == "test"
    assert m["reconstruction"] == printed["reconstruction"]  # deterministic
    assert 0 <= m["encoding"]["class_accuracy"] <= 1 and np.isfinite(m["reconstruction"]["psnr"])


def test_projection_is_measured_with_the_label_given(tmp_path, evaluator_root, capsys) -> None:
    ckpt = make_checkpoint(tmp_path / "cgan")
    assert main(["evaluate-encoding", str(ckpt), "--images", "6", "--steps", "3", "--evaluators",
                 str(evaluator_root)]) == 0
    m = read_config(ckpt).metrics
    assert "reconstruction" not in m  # no encoder: nothing reconstructs the whole split
    assert m["encoding"]["method"] == "projection" and m["encoding"]["steps"] == 3 and m["encoding"]["label_given"]


def test_a_model_that_cannot_encode_is_a_clear_error(tmp_path, evaluator_root, capsys) -> None:
    ckpt = make_checkpoint(tmp_path / "ae", conditional=False, sampleable=False)  # an ae without its encoder
    assert main(["evaluate-encoding", str(ckpt), "--evaluators", str(evaluator_root)]) == 2
    err = capsys.readouterr().err
    assert "has no encoder" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["evaluate-encoding", str(ckpt), "--images", "0"])
