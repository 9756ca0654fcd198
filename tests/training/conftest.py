from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m training ARGS`` as a user would; returns the completed process."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


TINY = ["--width", "8", "--z-dim", "8", "--batch-size", "16", "--synthetic-size", "96", "--no-progress",
        "--no-tensorboard", "--log-every", "1", "--save-dtype", "float32"]


@pytest.fixture
def tiny_args() -> list[str]:
    return list(TINY)


@pytest.fixture
def cli():
    return run_cli
