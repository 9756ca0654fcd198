"""Every shipped checkpoint's recorded command is one the training CLI still takes, and it resolves to
the options the checkpoint records (so the command line in config.json is the one that made it)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from training.checkpoint import read_config
from training.cli import main

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.parent for p in (REPO / "checkpoints").glob("*/config.json"))


def test_there_are_shipped_checkpoints():
    assert len(SHIPPED) >= 9


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_recorded_command_resolves_to_the_recorded_options(folder: Path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = read_config(folder)
    argv = shlex.split(cfg.training.command)
    assert argv[:4] == ["python", "-m", "training", "train"], cfg.training.command
    assert main([*argv[3:], "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["out"] == f"checkpoints/{folder.name}"
    recorded = cfg.training.options
    differ = {k: (recorded[k], resolved[k]) for k in recorded if k in resolved and recorded[k] != resolved[k]}
    assert not differ
    if cfg.training.init_g_from is not None:  # a fine-tune names the checkpoint it started from
        assert resolved["init_g_from"] == cfg.training.init_g_from.folder
    # A run resumed with other command lines records each of them: all still taken, the last is `command`.
    parts = cfg.training.parts
    assert not parts or parts[-1].command == cfg.training.command
    for part in parts[:-1]:
        argv = shlex.split(part.command)
        assert main([*argv[3:], "--dry-run"]) == 0, part.command
        assert json.loads(capsys.readouterr().out)["out"] == f"checkpoints/{folder.name}"
