"""Fixtures of the browser tests: one real service on tiny checkpoints and one Chromium per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import CHROMIUM, launch_chromium, running_service, write_test_checkpoints

sync_api = pytest.importorskip("playwright.sync_api", reason="the e2e tests need the playwright package")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of ``uvicorn app.main:app`` serving freshly written tiny checkpoints."""
    root = write_test_checkpoints(tmp_path_factory.mktemp("e2e-checkpoints"))
    # Few projection steps: the morph test's uploads are projected on a shared CPU.
    with running_service(root, default_model="tiny-cgan", env={"GANSERVE_PROJECTION_STEPS": "20"}) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian chromium is not installed ({CHROMIUM})")
    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()
