"""Recipes: named sets of training options, one TOML file each in this folder.

``python -m training train --recipe NAME --out DIR`` trains with the recipe's options; options given
on the command line (or as keywords from Python) override it. A file holds a ``description``, an
optional ``history`` (how the shipped model of that name was actually trained, when that was more
than one run of these options) and an ``[options]`` table of TrainOptions fields (see
``training/options.py``) — never where a run writes (--out, --name, --run-dir).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.options import ConfigError, TrainOptions

RECIPES_DIR = Path(__file__).resolve().parent
NOT_IN_A_RECIPE = ("out", "name", "run_dir", "command", "resume")


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    options: dict[str, Any]
    history: str = ""
    path: Path = field(default=RECIPES_DIR)


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def load_recipe(name: str) -> Recipe:
    """The recipe ``name``; ConfigError (naming --recipe) for an unknown name or a malformed file."""
    path = RECIPES_DIR / f"{name}.toml"
    if name not in recipe_names():
        raise ConfigError(f"--recipe: unknown recipe {name!r}; choose one of {', '.join(recipe_names())}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--recipe {name}: {path}: {e}") from None
    unknown = set(data) - {"description", "history", "options"}
    options = data.get("options", {})
    if unknown or not isinstance(options, dict):
        raise ConfigError(f"--recipe {name}: {path} may hold description, history and [options], not "
                          f"{', '.join(sorted(unknown)) or 'options = ' + repr(options)}")
    misplaced = [k for k in options if k in NOT_IN_A_RECIPE or k not in TrainOptions.model_fields]
    if misplaced:
        raise ConfigError(f"--recipe {name}: {path}: {', '.join(misplaced)} cannot be set by a recipe "
                          f"(it sets training options, not {', '.join(NOT_IN_A_RECIPE)})")
    return Recipe(name, str(data.get("description", "")), dict(options), str(data.get("history", "")), path)


def resolve(recipe: str | None, **options: Any) -> TrainOptions:
    """The options of ``recipe`` (if any) with ``options`` over them, validated: what the command line and a
    Python caller both get for ``--recipe NAME --flag value``."""
    base = load_recipe(recipe).options if recipe else {}
    return TrainOptions(**{**base, **options})
