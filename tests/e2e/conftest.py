"""Fixtures of the browser tests: one real service on tiny checkpoints and one Chromium per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.pages import TIMEOUT_MS
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


@pytest.fixture
def page(browser: Any, base_url: str) -> Iterator[Any]:
    """A fresh page that records every request it makes and fails the test on a script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.requests = []  # type: ignore[attr-defined]
    page.errors = []  # type: ignore[attr-defined]
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    assert page.errors == [], f"script errors on the page: {page.errors}"
    outside = [u for u in page.requests if not u.startswith((base_url, "blob:", "data:"))]
    assert outside == [], f"the page loaded something from outside the service: {outside}"
    context.close()
