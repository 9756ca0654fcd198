"""pix2pix training end to end on tiny configs: the objective's steps, the checkpoint it writes, resume,
the --l1-only baseline and the command line's refusals."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from training.checkpoint import load_generator, read_config
from training.cli import main
from training.data import ImageData, load_dataset, to_float
from training.loop import Trainer
from training.options import TrainOptions
from training.pairs import make_inputs

TINY = ["--family", "pix2pix", "--dataset", "synthetic", "--resolution", "32", "--channels", "3", "--width", "4",
        "--batch-size", "16", "--synthetic-size", "96", "--no-progress", "--no-tensorboard", "--log-every", "1",
        "--save-dtype", "float32", "--threads", "1"]


def train(tmp_path: Path, *extra: str, epochs: int = 2, name: str = "p2p") -> list[str]:
    args = ["train", *TINY, "--epochs", str(epochs), "--out", str(tmp_path / name), "--run-dir",
            str(tmp_path / f"{name}-run"), *extra]
    assert main(args) == 0
    return args


def test_two_epoch_run_writes_a_loadable_translator(tmp_path):
    train(tmp_path)
    g, cfg = load_generator(tmp_path / "p2p")
    assert cfg.family == "pix2pix" and cfg.translator and cfg.z_dim == 0 and not cfg.sampleable
    assert cfg.input is not None and cfg.input.model_dump() == {"channels": 1, "height": 32, "width": 32,
                                                               "transform": "edges"}
    assert cfg.image.channels == 3 and cfg.training.epochs == 2 and cfg.training.images_seen == 2 * 96
    assert cfg.training.options["l1_weight"] == 100.0 and cfg.training.options["l1_only"] is False
    test = load_dataset("synthetic", "test", 32, 3, synthetic_size=96)
    x = to_float(make_inputs(test.images[:4], "edges"))
    with torch.no_grad():
        y = g(x)
    assert y.shape == (4, 3, 32, 32) and torch.isfinite(y).all()
    # samples.png: held-out pairs, one row per class (6 shapes), two input | output pairs a row
    grid = Image.open(io.BytesIO((tmp_path / "p2p" / "samples.png").read_bytes()))
    assert grid.size == (2 + 4 * 34, 2 + 6 * 34)
    assert not any(p.suffix == ".pt" for p in (tmp_path / "p2p").iterdir())


def tiny_trainer(tmp_path: Path, data: ImageData, **changes) -> Trainer:
    from training.distributed import Dist
    from training.models import get_family

    opts = TrainOptions(**{"family": "pix2pix", "dataset": "synthetic", "out": str(tmp_path / "o"), "resolution": 32,
                           "channels": 3, "width": 4, "batch_size": 16, "synthetic_size": 96, "tensorboard": False,
                           **changes})
    return Trainer(opts, get_family("pix2pix"), data, Dist(0, 1, False), torch.device("cpu"))


def test_steps_pull_the_outputs_to_the_targets(tmp_path):
    data = load_dataset("synthetic", "train", 32, 3, synthetic_size=96)
    trainer = tiny_trainer(tmp_path, data, lr_g=2e-3, width=8)
    idx = torch.arange(16)
    x = to_float(data.images[idx])
    losses = [trainer.step(x, idx) for _ in range(40)]
    assert set(losses[0]) == {"loss_d", "d_real", "d_fake", "loss_g_gan", "loss_g", "l1"}
    assert float(losses[-1]["l1"]) < 0.5 * float(losses[0]["l1"])


def test_l1_only_never_steps_d(tmp_path):
    data = load_dataset("synthetic", "train", 32, 3, synthetic_size=96)
    trainer = tiny_trainer(tmp_path, data, l1_only=True)
    d_before = {k: v.clone() for k, v in trainer.d_raw.state_dict().items()}
    idx = torch.arange(16)
    out = trainer.step(to_float(data.images[idx]), idx)
    assert set(out) == {"loss_g", "l1"} and torch.allclose(out["loss_g"], 100 * out["l1"])
    assert all(torch.equal(v, trainer.d_raw.state_dict()[k]) for k, v in d_before.items())
    assert set(trainer.objective.optimizers) == {"g"}


def test_mirrored_targets_get_mirrored_inputs(tmp_path):
    data = load_dataset("synthetic", "train", 32, 3, synthetic_size=96)
    flipping = ImageData(data.name, data.images, data.labels, data.class_names, flip=True)
    objective = tiny_trainer(tmp_path, flipping).objective
    idx = torch.tensor([0, 1, 2])
    x = to_float(data.images[idx])
    x[1] = x[1].flip(2)  # (C, H, W): the loop's horizontal flip
    inp = objective.pair_inputs(x, idx)  # type: ignore[attr-defined]
    own = to_float(make_inputs(data.images[idx], "edges"))
    assert torch.equal(inp[0], own[0]) and torch.equal(inp[2], own[2])
    assert torch.equal(inp[1], own[1].flip(2))


def test_resume_continues_and_refuses_another_transform(tmp_path, capsys):
    args = train(tmp_path, "--transform", "grey", epochs=1)
    assert main([*args[:args.index("--epochs")], "--epochs", "2", *args[args.index("--epochs") + 2:], "--resume"]) == 0
    cfg = read_config(tmp_path / "p2p")
    assert cfg.training.epochs == 2 and cfg.input is not None and cfg.input.transform == "grey"
    assert [p.from_epoch for p in cfg.training.parts] == [0, 1]  # the second command took over at epoch 1
    capsys.readouterr()
    other = [a if a != "grey" else "edges" for a in args]
    assert main([*other, "--epochs", "3", "--resume"]) == 2
    assert "transform='grey'" in capsys.readouterr().err


def test_l1_only_baseline_run_records_itself(tmp_path):
    train(tmp_path, "--l1-only", epochs=1, name="base")
    cfg = read_config(tmp_path / "base")
    assert cfg.training.options["l1_only"] is True
    assert "trained on 100·L1 alone (the paper's baseline, no discriminator); input: edges" in cfg.description
    assert "PatchGAN" not in cfg.description


def refused(capsys, *args: str) -> str:
    """The error of a `train` command line that must be refused with exit 2 (argparse or the option rules)."""
    try:
        code = main(["train", *args, "--dry-run"])
    except SystemExit as e:
        code = e.code  # type: ignore[assignment]
    assert code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--family", "dcgan", "--l1-only"], "--l1-only is an option of --family pix2pix, not of --family dcgan"),
    (["--family", "cgan", "--transform", "grey"], "--transform is an option of --family pix2pix"),
    (["--family", "vae", "--l1-weight", "10"], "--l1-weight is an option of --family pix2pix"),
    (["--family", "pix2pix"], "--resolution 28: --family pix2pix's U-Net"),
    (["--family", "pix2pix", "--resolution", "32", "--transform", "grey"], "--transform grey: grey → colour needs"),
    (["--family", "pix2pix", "--resolution", "32", "--transform", "sketch"], "--transform"),
    (["--family", "pix2pix", "--resolution", "32", "--eval-every", "1"], "--eval-every: --family pix2pix"),
    (["--family", "pix2pix", "--resolution", "32", "--loss", "hinge"], "--loss is an option of --family"),
])
def test_cli_refusals_name_the_flag(capsys, tmp_path, args, message):
    err = refused(capsys, *args, "--dataset", "fashion-mnist", "--out", str(tmp_path / "x"))
    assert message in err


def test_dry_run_resolves_pix2pix_options(capsys, tmp_path):
    assert main(["train", *TINY, "--out", str(tmp_path / "x"), "--l1-weight", "50", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert (resolved["transform"], resolved["l1_weight"], resolved["l1_only"]) == ("edges", 50.0, False)


def test_grid_pairs_are_held_out_test_images(tmp_path):
    data = load_dataset("synthetic", "train", 32, 3, synthetic_size=96)
    objective = tiny_trainer(tmp_path, data).objective
    inputs, targets = objective.held_out_pairs()  # type: ignore[attr-defined]
    test = load_dataset("synthetic", "test", 32, 3, synthetic_size=96)
    assert targets.shape == (12, 3, 32, 32) and torch.equal(inputs, make_inputs(targets, "edges"))
    where = {bytes(t.numpy()): int(label) for t, label in zip(test.images, test.labels, strict=True)}
    assert [where[bytes(t.numpy())] for t in targets] == [k for k in range(6) for _ in range(2)]  # 2 per class
    train_rows = {bytes(u.numpy()) for u in data.images}
    assert not any(bytes(t.numpy()) in train_rows for t in targets)


def test_sample_refuses_a_translator_with_a_clear_error(tmp_path, capsys):
    from tests.translator_fixture import write_translator

    folder = write_translator(tmp_path)
    assert main(["sample", str(folder), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "is a translator (pix2pix): it turns edges images into images" in err and "Traceback" not in err
