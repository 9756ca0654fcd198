"""Shared pytest set-up: the service's MKL mode, torch kept to the machine's cores, a third-party import warning
quieted."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch

import app  # noqa: F401  (MKL's strict reproducibility mode, set before the first tensor operation: app/__init__.py)

with warnings.catch_warnings():
    # starlette.testclient (imported by fastapi.testclient) warns that it prefers httpx2; the tests use httpx.
    warnings.simplefilter("ignore")
    import fastapi.testclient  # noqa: F401

torch.set_num_threads(min(2, torch.get_num_threads()))

# The tools the test extras install as programs (hadolint, kubectl, kubernetes-validate) sit beside the
# interpreter: put its folder first on PATH, as activating its virtualenv would (make test runs
# .venv/bin/python without activating it).
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
