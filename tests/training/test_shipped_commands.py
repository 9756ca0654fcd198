"""Every shipped checkpoint has a recipe, its recorded command is `--recipe <its name>`, and that command
— still taken by the training CLI — resolves to exactly the options the checkpoint records."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from training.checkpoint import read_config
from training.cli import main
from training.recipes import load_recipe, recipe_names

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.parent for p in (REPO / "checkpoints").glob("*/config.json"))


def test_there_are_shipped_checkpoints():
    assert len(SHIPPED) >= 9


def test_every_shipped_checkpoint_has_its_recipe():
    assert {p.name for p in SHIPPED} <= set(recipe_names())


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_recorded_command_resolves_to_the_recorded_options(folder: Path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = read_config(folder)
    argv = shlex.split(cfg.training.command)
    assert argv[:4] == ["python", "-m", "training", "train"], cfg.training.command
    assert argv[4:8] == ["--recipe", folder.name, "--out", f"checkpoints/{folder.name}"], cfg.training.command
    assert main([*argv[3:], "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["out"] == f"checkpoints/{folder.name}"
    recorded = cfg.training.options
    assert set(recorded) <= set(resolved)
    differ = {k: (recorded[k], resolved[k]) for k in recorded if recorded[k] != resolved[k]}
    assert not differ
    # The recipe alone sets every option the run learnt from: the rest of the command only says where it
    # wrote (--out, --run-dir) and that it was resumed.
    recipe = load_recipe(folder.name).options
    assert set(argv[8:]) - {"--resume"} <= {"--run-dir", recorded["run_dir"]}
    assert all(recorded[k] == (list(v) if isinstance(v, tuple) else v) for k, v in recipe.items())
    if cfg.training.init_g_from is not None:  # a fine-tune names the checkpoint it started from
        assert resolved["init_g_from"] == cfg.training.init_g_from.folder
    # A run resumed with other command lines records each of them: all still taken, the last is `command`.
    parts = cfg.training.parts
    assert not parts or parts[-1].command == cfg.training.command
    for part in parts[:-1]:
        argv = shlex.split(part.command)
        assert main([*argv[3:], "--dry-run"]) == 0, part.command
        assert json.loads(capsys.readouterr().out)["out"] == f"checkpoints/{folder.name}"
