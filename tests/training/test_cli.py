"""The command line as a user meets it: every bad option is an error naming the flag, never a traceback."""

import json

import pytest
from PIL import Image

from training.cli import main

BASE = ["train", "--family", "cgan", "--dataset", "synthetic", "--out", "OUT"]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["train", "--family", "stylegan", "--dataset", "mnist", "--out", "x"], "--family"),
        (["train", "--family", "cgan", "--dataset", "imagenet", "--out", "x"], "--dataset"),
        ([*BASE, "--epochs", "abc"], "--epochs"),
        ([*BASE, "--epochs", "0"], "--epochs"),
        ([*BASE, "--batch-size", "-3"], "--batch-size"),
        ([*BASE, "--lr-g", "0"], "--lr-g"),
        ([*BASE, "--lr-decay-epochs", "-1"], "--lr-decay-epochs"),
        ([*BASE, "--epochs", "3", "--lr-decay-epochs", "4"], "--lr-decay-epochs 4 is more than --epochs 3"),
        ([*BASE, "--resolution", "48"], "--resolution"),
        ([*BASE, "--channels", "2"], "--channels"),
        ([*BASE, "--upsample", "bilinear"], "--upsample"),
        ([*BASE, "--bn", "sometimes"], "--bn"),
        ([*BASE, "--label-smoothing", "0.9"], "--label-smoothing"),
        ([*BASE, "--classes", "a,b"], "--classes"),
        ([*BASE, "--seed", "-1"], "--seed"),
        ([*BASE, "--seed", str(2**32)], "--seed"),
        ([*BASE, "--no-such-option"], "unrecognized arguments: --no-such-option"),
        ([*BASE, "--pretrain-d-epochs", "2"], "--pretrain-d-epochs"),
        ([*BASE, "--acgan-fake-class-weight", "0"], "--acgan-fake-class-weight"),
        ([*BASE, "--acgan-g-class-weight", "0.5"], "--acgan-g-class-weight"),
        ([*BASE, "--acgan-projection"], "--acgan-projection"),
        (["train", "--family", "acgan", "--dataset", "synthetic", "--out", "x", "--acgan-g-class-weight", "11"],
         "--acgan-g-class-weight"),
        (["train", "--family", "acgan", "--dataset", "synthetic", "--out", "x", "--acgan-fake-class-weight", "-1"],
         "--acgan-fake-class-weight"),
        ([*BASE, "--keep-best", "coverage"], "--keep-best needs --eval-every"),
        ([*BASE, "--keep-best", "accuracy", "--eval-every", "1"], "--keep-best"),
        (["train", "--family", "dcgan", "--dataset", "synthetic", "--out", "x", "--eval-every", "1", "--keep-best",
          "min_class_accuracy"], "--keep-best min_class_accuracy needs a conditional family"),
        (["train", "--family", "vae", "--dataset", "synthetic", "--out", "x", "--minibatch-std"], "--minibatch-std"),
        (["train", "--family", "mlp-gan", "--dataset", "synthetic", "--out", "x", "--spectral-norm"],
         "--spectral-norm"),
        (["train", "--family", "wgan-gp", "--dataset", "synthetic", "--out", "x", "--loss", "hinge"], "--loss"),
        ([*BASE, "--device", "cuda:7"], "--device"),
        ([*BASE, "--diffaugment", "colour"], "--diffaugment"),
        (["train", "--family", "cgan", "--dataset", "folder:x", "--out", "x", "--background", "pink"],
         "--background: background 'pink': use one of white, black, grey or #rrggbb"),
        ([*BASE, "--background", "black"], "--background composites the transparent pixels of emoji and folder"),
        ([*BASE, "--r1-gamma", "-1"], "--r1-gamma"),
        (["train", "--family", "wgan-gp", "--dataset", "synthetic", "--out", "x", "--r1-gamma", "1"], "--r1-gamma"),
        ([*BASE, "--diffaugment", "cutout,cutout"], "--diffaugment"),
        (["train", "--family", "vae", "--dataset", "synthetic", "--out", "x", "--diffaugment", "cutout"],
         "--diffaugment"),
        (["train", "--family", "cgan", "--dataset", "synthetic", "--out", "x", "--latent-categories", "4"],
         "--latent-categories"),
        (["train", "--family", "vae", "--dataset", "synthetic", "--out", "x", "--latent-categories", "4"],
         "--latent-categories"),
        (["train", "--family", "dcgan", "--dataset", "synthetic", "--out", "x", "--latent-categories", "1"],
         "--latent-categories"),
        (["train", "--family", "dcgan", "--dataset", "synthetic", "--out", "x", "--z-dim", "8",
          "--latent-categories", "9"], "--latent-categories"),
        (["train", "--family", "dcgan", "--dataset", "synthetic", "--out", "x", "--info-weight", "2"],
         "--info-weight"),
        (["train", "--family", "dcgan", "--dataset", "synthetic", "--out", "x", "--latent-categories", "4",
          "--info-weight", "-1"], "--info-weight"),
        (["train", "--family", "dcgan", "--dataset", "synthetic", "--out", "x", "--self-condition"],
         "--self-condition"),
        (["train", "--family", "wgan-gp", "--dataset", "synthetic", "--out", "x", "--self-condition"],
         "--self-condition"),
        (["train", "--family", "dcgan", "--dataset", "synthetic", "--out", "x", "--latent-categories", "4",
          "--self-condition", "--info-weight", "2"], "--info-weight"),
        (["train", "--family", "dcgan", "--dataset", "synthetic", "--out", "x", "--latent-categories", "4",
          "--recluster-every", "5"], "--recluster-every"),
        (["train", "--family", "dcgan", "--dataset", "synthetic", "--out", "x", "--latent-categories", "4",
          "--self-condition", "--recluster-every", "-1"], "--recluster-every"),
        (["train", "--dataset", "mnist", "--out", "x"], "--family"),
        (["sample"], "checkpoint"),
    ],
)
def test_bad_options_name_the_flag(args, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err


def test_dry_run_prints_the_resolved_config(capsys, tmp_path):
    assert main([*BASE[:-1], str(tmp_path / "my-model"), "--dry-run", "--epochs", "3"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["name"] == "my-model" and cfg["epochs"] == 3 and cfg["run_dir"].endswith("runs/my-model")
    assert cfg["lr_g"] == 2e-4 and cfg["beta1"] == 0.5 and cfg["command"].startswith("python -m training train")
    assert not (tmp_path / "my-model").exists()


def test_background_composites_a_folders_transparency(tmp_path, capsys):
    from training.distributed import Dist
    from training.loop import load_data
    from training.options import TrainOptions

    for label in ("a", "b"):
        (tmp_path / "set" / label).mkdir(parents=True)
        for i in range(3):
            im = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # transparent, with an opaque square
            im.paste((255, 0, 0, 255), (4, 4, 12, 12))
            im.save(tmp_path / "set" / label / f"{i}.png")
    args = ["train", "--family", "dcgan", "--dataset", f"folder:{tmp_path / 'set'}", "--out", str(tmp_path / "o"),
            "--resolution", "28", "--channels", "3", "--batch-size", "2"]
    assert main([*args, "--dry-run", "--background", "#102030"]) == 0
    opts = TrainOptions(**{k: v for k, v in json.loads(capsys.readouterr().out).items() if k != "command"})
    assert opts.background == "#102030"
    images = load_data(opts, Dist()).images  # (6, 3, 28, 28)
    assert images[:, :, 0, 0].tolist() == [[16, 32, 48]] * 6  # the transparent corner, on the given colour
    assert (images[:, 0, 14, 14] == 255).all() and (images[:, 1:, 14, 14] == 0).all()  # the square stays red
    default = load_data(opts.replace(background="white"), Dist()).images
    assert (default[:, :, 0, 0] == 255).all()  # white is the default


def test_missing_dataset_is_a_clear_error_not_a_traceback(cli, tmp_path):
    done = cli("train", "--family", "dcgan", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path),
               "--out", str(tmp_path / "o"), "--run-dir", str(tmp_path / "r"))
    assert done.returncode == 2
    assert "--dataset" in done.stderr and "apt-get install dataset-fashion-mnist" in done.stderr
    assert "Traceback" not in done.stderr


def test_corrupt_idx_is_a_clear_error(cli, tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + bytes(20))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02")
    done = cli("train", "--family", "dcgan", "--dataset", "mnist", "--data-dir", str(tmp_path),
               "--out", str(tmp_path / "o"), "--run-dir", str(tmp_path / "r"))
    assert done.returncode == 2 and "truncated" in done.stderr and "Traceback" not in done.stderr


def test_batch_larger_than_dataset(cli, tmp_path):
    done = cli("train", "--family", "dcgan", "--dataset", "synthetic", "--synthetic-size", "12",
               "--batch-size", "64", "--out", str(tmp_path / "o"), "--run-dir", str(tmp_path / "r"))
    assert done.returncode == 2 and "--batch-size" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ck")
    out = tmp / "shapes"
    assert main(["train", "--family", "cgan", "--dataset", "synthetic", "--epochs", "1", "--out", str(out),
                 "--run-dir", str(tmp / "run"), "--width", "8", "--z-dim", "8", "--batch-size", "16",
                 "--synthetic-size", "96", "--no-progress", "--no-tensorboard"]) == 0
    return out


def test_sample_renders_through_load_generator(trained, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert main(["sample", str(trained), "--seed", "7", "--label", "square", "--n", "16", "--nrow", "4",
                 "--out", str(out)]) == 0
    assert "seeds 7..22" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.size == (4 * 30 + 2, 4 * 30 + 2) and im.mode == "L"
    one = tmp_path / "one.png"
    assert main(["sample", str(trained), "--seed", "7", "--label", "1", "--scale", "3", "--out", str(one)]) == 0
    with Image.open(one) as im:
        assert im.size == (84, 84)
    again = tmp_path / "again.png"
    main(["sample", str(trained), "--seed", "7", "--label", "1", "--scale", "3", "--out", str(again)])
    assert one.read_bytes() == again.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--label", "hexagon"], "--label: 'hexagon' is not a class"),
        (["--label", "99"], "--label: '99' is not a class"),
        (["--seed", str(2**32 - 1), "--n", "2"], "--seed/--n: seed must be"),
    ],
)
def test_sample_errors(trained, tmp_path, args, message, capsys):
    assert main(["sample", str(trained), *args, "--out", str(tmp_path / "x.png")]) == 2
    assert message in capsys.readouterr().err


def test_sample_refuses_a_broken_checkpoint(tmp_path, capsys):
    assert main(["sample", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "config.json: missing" in capsys.readouterr().err
