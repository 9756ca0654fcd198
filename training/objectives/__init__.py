"""Objectives: how each family trains — its D and G steps, written with the loss functions of
``training/losses.py``. The training loop calls ``objective.step(x, y)`` and never asks which one it has.

A family names its objective (``Family.objective`` in ``training/models/``); an objective registers
itself with ``@register_objective("name")``. A new family is one networks module, one objective module
(imported below) and a recipe.
"""

from __future__ import annotations

from training.objectives.base import OBJECTIVES, Objective, register_objective


def objective_of(family: str) -> type[Objective]:
    """The objective class that trains ``--family family``."""
    from training.models import get_family

    _load_all()
    return OBJECTIVES[get_family(family).objective]


def _load_all() -> None:
    # Importing the objective modules runs their decorators.
    from training.objectives import autoencoder, gan, pix2pix, wgan  # noqa: F401


_load_all()

__all__ = ["OBJECTIVES", "Objective", "objective_of", "register_objective"]
