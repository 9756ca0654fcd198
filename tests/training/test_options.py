"""The options model: one validation for the CLI and for Python callers; recipes under it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.cli import main
from training.objectives import OBJECTIVES
from training.options import ConfigError, TrainOptions
from training.recipes import load_recipe, recipe_names, resolve

REPO = Path(__file__).resolve().parents[2]
BASE = {"family": "dcgan", "dataset": "synthetic", "out": "/tmp/x"}


@pytest.mark.parametrize(("options", "says"), [
    ({"n_critic": 2}, "--n-critic is an option of --family wgan-gp, not of --family dcgan"),
    ({"kl_weight": 0.5}, "--kl-weight is an option of --family vae, not of --family dcgan"),
    ({"acgan_g_class_weight": 0.5}, "--acgan-g-class-weight is an option of --family acgan, not of --family dcgan"),
    ({"family": "vae", "loss": "hinge"}, "--loss is an option of --family"),
    ({"family": "vae", "lr_d": 1e-4}, "--lr-d is an option of --family"),
    ({"family": "wgan-gp", "r1_gamma": 1.0}, "--r1-gamma is an option of --family"),
    ({"family": "cgan", "expost_gmm": 3}, "--expost-gmm is an option of --family vae, not of --family cgan"),
    ({"lr_g": 0}, "--lr-g"),
    ({"epochs": 0}, "--epochs"),
    ({"resolution": 48}, "--resolution"),
    ({"no_such_option": 1}, "unknown option 'no_such_option'"),
    ({"dataset": "imagenet"}, "--dataset: unknown dataset 'imagenet'"),
    ({"epochs": 3, "lr_decay_epochs": 4}, "--lr-decay-epochs 4 is more than --epochs 3"),
])
def test_python_callers_get_the_clis_checks(options, says):
    with pytest.raises(ConfigError) as e:
        TrainOptions(**{**BASE, **options})
    assert says in str(e.value)


def test_a_wrong_option_for_the_family_is_refused_from_the_cli(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--family", "dcgan", "--dataset", "synthetic", "--out", "x", "--n-critic", "2", "--dry-run"])
    assert e.value.code == 2
    assert "--n-critic is an option of --family wgan-gp, not of --family dcgan" in capsys.readouterr().err


def test_options_are_frozen_and_replace_validates_again():
    o = TrainOptions(**BASE)
    assert (o.name, o.run_dir) == ("x", "runs/x")
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        o.epochs = 3  # type: ignore[misc]
    assert o.replace(epochs=3).epochs == 3
    moved = o.replace(out="/tmp/y")
    assert (moved.name, moved.run_dir) == ("y", "runs/y")  # derived from --out again
    named = TrainOptions(**BASE, name="mine", run_dir="/tmp/r").replace(out="/tmp/y")
    assert (named.name, named.run_dir) == ("mine", "/tmp/r")  # given: kept
    with pytest.raises(ConfigError, match="--n-critic"):
        o.replace(n_critic=3)


def test_every_objective_option_is_a_field_and_the_parser_has_every_field():
    fields = set(TrainOptions.model_fields)
    assert {n for obj in OBJECTIVES.values() for n in obj.options} <= fields
    from training.cli import build_parser

    train = next(a for a in build_parser()._subparsers._group_actions[0].choices.values()  # type: ignore[union-attr]
                 if a.prog.endswith(" train"))
    dests = {a.dest for a in train._actions}
    assert fields - {"command"} <= dests


def test_recipe_then_flags_then_defaults(capsys):
    assert main(["train", "--recipe", "fashion-cgan", "--out", "/tmp/x", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    shipped = json.loads((REPO / "checkpoints/fashion-cgan/config.json").read_text())["training"]["options"]
    assert {k: resolved[k] for k in shipped if k not in ("out", "name", "run_dir")} == \
        {k: v for k, v in shipped.items() if k not in ("out", "name", "run_dir")}
    assert main(["train", "--recipe", "fashion-cgan", "--out", "/tmp/x", "--lr-g", "1e-4", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["lr_g"] == 1e-4 and resolved["lr_d"] == 5e-5 and resolved["epochs"] == 55
    # The same from Python.
    assert resolve("fashion-cgan", out="/tmp/x", lr_g=1e-4).to_json() | {"command": ""} == resolved | {"command": ""}
    with pytest.raises(ConfigError, match="--kl-weight is an option of --family vae"):
        resolve("fashion-cgan", out="/tmp/x", kl_weight=0.1)


def test_unknown_recipe_names_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--recipe", "nope", "--out", "x", "--dry-run"])
    err = capsys.readouterr().err
    assert "--recipe: unknown recipe 'nope'" in err and "fashion-cgan" in err


def test_a_recipe_cannot_say_where_a_run_writes(tmp_path, monkeypatch):
    import training.recipes as recipes

    (tmp_path / "bad.toml").write_text('description = "x"\n[options]\nfamily = "dcgan"\nout = "somewhere"\n')
    monkeypatch.setattr(recipes, "RECIPES_DIR", tmp_path)
    with pytest.raises(ConfigError, match="out cannot be set by a recipe"):
        load_recipe("bad")


def test_every_recipe_is_valid_options():
    for name in recipe_names():
        resolve(name, out=f"/tmp/{name}")


def test_recipes_command_lists_them():
    done = subprocess.run([sys.executable, "-m", "training", "recipes"], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names == recipe_names() and "fashion-cgan" in names


def test_help_is_grouped_by_family(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for title in ("WGAN-GP (--family wgan-gp):", "VAE (--family vae):", "ACGAN (--family acgan):"):
        assert title in out
    section = out[out.index("WGAN-GP (--family wgan-gp):"):].split("\n\n")[0]
    assert "--n-critic" in section and "--gp-weight" in section and "--kl-weight" not in section
