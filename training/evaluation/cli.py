"""Commands of the evaluation half: wired into ``python -m training`` by training/cli.py."""

from __future__ import annotations

import argparse
from typing import Any

COMMANDS: tuple[str, ...] = ()


def add_commands(sub: Any) -> None:
    """Add this module's subcommands to the ``python -m training`` parser."""


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    parser.error(f"unknown command {args.command}")
    return 2
