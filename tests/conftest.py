"""Shared pytest set-up: the service's MKL mode, torch kept to the machine's cores, a third-party import warning
quieted."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
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


@pytest.fixture(autouse=True, scope="session")
def decoded_image_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Folder datasets decoded by the tests (and the commands they start) are cached in a temporary folder,
    never in the user's ~/.cache/ganserve."""
    before = os.environ.get("GANSERVE_CACHE")
    os.environ["GANSERVE_CACHE"] = str(tmp_path_factory.mktemp("ganserve-cache"))
    yield
    if before is None:
        os.environ.pop("GANSERVE_CACHE", None)
    else:
        os.environ["GANSERVE_CACHE"] = before
