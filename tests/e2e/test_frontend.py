"""The front end at ``/``, driven in headless Chromium against the real service (``uvicorn`` subprocess).

Covers issue 5: model → class → new seed shows the API's exact bytes for that seed; an
interpolation's GIF download has the frame count asked for; errors and "warming up" are shown;
the page is usable by keyboard, fits a phone, and loads nothing from outside the service.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from tests.e2e.server import PHONE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

COND, UNCOND, AE = "tiny-cgan", "tiny-mlp", "tiny-ae"
TIMEOUT_MS = 15_000


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


def open_ready(page: Any, base_url: str, fragment: str = "") -> None:
    page.goto(f"{base_url}/{fragment}")
    page.wait_for_function("document.getElementById('status').textContent === 'Ready'")
    page.wait_for_selector("#image:not([hidden])")


def shown_bytes(page: Any, selector: str) -> bytes:
    """The bytes behind a displayed <img> (a blob: URL made from the API's response)."""
    b64 = page.eval_on_selector(selector, """async (img) => {
        const buf = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
        let s = ""; for (const b of buf) s += String.fromCharCode(b);
        return btoa(s);
    }""")
    return base64.b64decode(b64)


def wait_new_image(page: Any, before: str) -> str:
    page.wait_for_function("(old) => { const i = document.getElementById('image');"
                           " return i.src !== old && i.complete && i.naturalWidth > 0; }", arg=before)
    return page.get_attribute("#image", "src")


def test_model_class_seed_show_the_apis_bytes(page: Any, base_url: str) -> None:
    open_ready(page, base_url)
    options = page.eval_on_selector_all("#model option", "os => os.map(o => [o.value, o.disabled])")
    assert options == [[AE, True], [COND, False], [UNCOND, False]]

    # An unconditional model: its card says so and the class picker goes away.
    src = page.get_attribute("#image", "src")
    page.select_option("#model", UNCOND)
    page.wait_for_selector("#card h3:text-is('tiny-mlp')")
    assert "none (unconditional)" in page.text_content("#card")
    assert page.is_hidden("#label")
    # Measured on 10k samples: the card says which quality bars it clears and which it misses.
    assert page.text_content("#card .bars .verdict") == "Misses 1 of 3 quality bars: coverage ≥ 0.8."
    assert page.eval_on_selector_all("#card .bars li", "ls => ls.map(l => [l.textContent, l.dataset.state])") == [
        ["✓ all classes, KL ≤ 0.1", "cleared"], ["✗ coverage ≥ 0.8", "missed"], ["✓ memorisation ≤ 2 %", "cleared"]]
    src = wait_new_image(page, src)
    # It was measured at truncation 0.7, so it is served there: the field starts at its ψ, which the
    # request leaves to the service's default.
    assert "drawn at truncation ψ 0.7" in page.text_content("#card")
    assert page.input_value("#truncation") == "0.7" and "truncation" not in page.input_value("#curl")
    # Stopped and resumed with another command line: "How it was trained" lists both, each from its epoch.
    page.click("#card details summary")
    assert page.eval_on_selector_all("#card details ol.parts li", "ls => ls.map(l => l.textContent)") == [
        "from epoch 0: python -m training train --family mlp-gan --epochs 3",
        "from epoch 3: … --epochs 5 --resume --lr-g 5e-5"]

    # The conditional model's card: dataset, classes, measured metrics and unmeasured ones.
    page.select_option("#model", COND)
    page.wait_for_selector("#card h3:text-is('tiny-cgan')")
    assert page.input_value("#truncation") == "1"
    assert page.text_content("#card details code") == "tests"  # one command line: shown as it is
    card = page.text_content("#card")
    assert "synthetic" in card
    assert page.eval_on_selector_all("#card .classes li", "ls => ls.map(l => l.textContent)") == [
        "circle", "square", "t-shirt/top"]
    fid = page.locator("#card dl.metrics dt:text-is('FID') + dd").text_content()
    assert fid == "1.50"
    assert page.locator("#card dl.metrics dt:text-is('Class accuracy') + dd").text_content() == "not measured"
    assert page.text_content("#card .bars .verdict").startswith("Not judged against the quality bars")
    src = wait_new_image(page, src)

    # Class by name, one image, then a new seed (by keyboard): the image changes and is the API's.
    page.select_option("#label", "square")
    src = wait_new_image(page, src)
    page.select_option("#n", "1")
    src = wait_new_image(page, src)
    first = shown_bytes(page, "#image")
    old_seed = page.input_value("#seed")
    page.focus("#new-seed")
    page.keyboard.press("Enter")
    src = wait_new_image(page, src)
    seed = page.input_value("#seed")
    assert seed != old_seed
    shown = shown_bytes(page, "#image")
    assert shown != first

    permalink = page.input_value("#permalink")
    parts = urlsplit(permalink)
    assert parts.path == f"/models/{COND}/seeds/{seed}.png"
    query = parse_qs(parts.query)
    assert query["label"] == ["square"]
    scale = int(query["scale"][0])
    # The API's bytes for that seed, asked another way: /generate with the class as an index.
    api = httpx.get(f"{base_url}/generate", params={"model": COND, "label": 1, "seed": seed, "scale": scale})
    assert api.status_code == 200
    assert api.headers["x-seed"] == seed
    assert shown == api.content
    assert httpx.get(permalink).content == shown
    assert Image.open(io.BytesIO(shown)).size == (28 * scale, 28 * scale)
    assert permalink in page.input_value("#curl")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
    page.click("button[data-copy='curl']")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == page.input_value("#curl")
    assert page.eval_on_selector("#image", "i => getComputedStyle(i).imageRendering") == "pixelated"

    # The page's own URL restores the view.
    assert f"seed={seed}" in page.url and "label=square" in page.url


def test_interpolation_plays_and_downloads_a_gif(page: Any, base_url: str) -> None:
    open_ready(page, base_url)
    page.fill("#from-seed", "3")
    page.fill("#to-seed", "7")
    page.fill("#frames", "10")
    page.select_option("#method", "lerp")
    page.click("#interpolate")
    page.wait_for_selector("#download:not([hidden])")
    assert page.eval_on_selector("#animation", "i => i.complete && i.naturalWidth > 0")
    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename.endswith(".gif")
    gif = Image.open(download.path())
    assert gif.format == "GIF"
    assert gif.n_frames == 10
    link = page.input_value("#interp-link")
    assert "from_seed=3" in link and "to_seed=7" in link and "method=lerp" in link
    assert httpx.get(link).content == shown_bytes(page, "#animation")

    # A class morph, chosen by keyboard: arrow keys move between the two radio buttons.
    page.focus("#mode-seeds")
    page.keyboard.press("ArrowRight")
    assert page.is_checked("#mode-morph")
    page.select_option("#from-label", "circle")
    page.select_option("#to-label", "t-shirt/top")
    page.fill("#frames", "6")
    page.focus("#frames")
    page.keyboard.press("Enter")  # submits the form
    page.wait_for_function("document.getElementById('interp-link').value.includes('to_label=t-shirt')")
    page.wait_for_function("document.getElementById('status').textContent === 'Ready'")
    with page.expect_download() as info:
        page.click("#download")
    assert Image.open(info.value.path()).n_frames == 6

    # Truncation: the field starts at the model's ψ and is sent only when it differs from it.
    page.check("#mode-seeds")
    assert page.input_value("#interp-truncation") == "1"
    page.fill("#interp-truncation", "0.5")
    page.click("#interpolate")
    page.wait_for_function("document.getElementById('interp-link').value.includes('truncation=0.5')")
    page.wait_for_function("document.getElementById('status').textContent === 'Ready'")
    assert "ψ 0.5" in page.text_content("#animation-caption")
    link = page.input_value("#interp-link")
    at_model_psi = link.replace("&truncation=0.5", "")
    assert at_model_psi != link
    assert httpx.get(link).content == shown_bytes(page, "#animation") != httpx.get(at_model_psi).content

    # A model served at ψ 0.7: the field follows it, the link leaves ψ to the service, the caption says it.
    page.select_option("#model", UNCOND)
    page.wait_for_selector("#card h3:text-is('tiny-mlp')")
    assert page.input_value("#interp-truncation") == "0.7"
    page.click("#interpolate")
    page.wait_for_function(f"document.getElementById('interp-link').value.includes('model={UNCOND}')")
    page.wait_for_function("document.getElementById('status').textContent === 'Ready'")
    assert "truncation" not in page.input_value("#interp-link")
    assert "ψ 0.7" in page.text_content("#animation-caption")


def test_errors_show_the_services_detail(page: Any, base_url: str) -> None:
    # An unknown model in the page's URL: the 404's detail names the known models.
    page.goto(f"{base_url}/#model=nope")
    page.wait_for_selector("#error:not([hidden])")
    text = page.text_content("#error")
    assert "HTTP 404" in text and "unknown model 'nope'" in text and COND in text

    # A seed whose grid runs past the last seed: the 422's detail says what is allowed.
    page.goto("about:blank")  # a hash-only change would not reload the page
    page.goto(f"{base_url}/#model={COND}&n=4&seed=0")
    page.wait_for_selector("#image:not([hidden])")
    assert page.is_hidden("#error")
    page.fill("#seed", "4294967295")
    page.click("#generate")
    page.wait_for_selector("#error:not([hidden])")
    text = page.text_content("#error")
    assert "HTTP 422" in text and "seed + n − 1 must be ≤ 4294967295" in text
    assert page.get_attribute("#error", "role") == "alert"
    # Fixing the value clears the message.
    page.fill("#seed", "5")
    page.click("#generate")
    page.wait_for_selector("#error", state="hidden")

    # Out of range for the interpolation too.
    page.fill("#frames", "500")
    page.click("#interpolate")
    page.wait_for_function("document.getElementById('error-text').textContent.includes('frames')")
    assert "less than or equal to 120" in page.text_content("#error-text")


def test_warming_up_until_ready(page: Any, base_url: str) -> None:
    """While /readyz answers 503 the page says it is warming up, then carries on by itself."""
    calls = {"n": 0}

    def not_ready_yet(route: Any) -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            body = {"status": "loading", "models": 1, "refused": 0, "default": None, "device": "cpu"}
            route.fulfill(status=503, content_type="application/json", body=json.dumps(body),
                          headers={"Retry-After": "1"})
        else:
            route.continue_()

    page.route(re.compile(r".*/readyz$"), not_ready_yet)
    page.goto(f"{base_url}/")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Warming up')")
    assert "loading and warming up the models" in page.text_content("#status")
    assert page.is_disabled("#generate")
    page.wait_for_selector("#image:not([hidden])")
    assert page.text_content("#status") == "Ready"
    assert page.is_enabled("#generate")
    assert calls["n"] >= 3


def test_keyboard_labels_and_phone_layout(page: Any, base_url: str) -> None:
    page.set_viewport_size(PHONE)
    open_ready(page, base_url, f"#model={COND}&n=1&seed=11")
    # Every visible control has a label.
    unlabelled = page.eval_on_selector_all(
        "input, select, button",
        "els => els.filter(e => e.offsetParent !== null && e.type !== 'hidden')"
        ".filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())"
        ".map(e => e.id)")
    assert unlabelled == []
    # One column, nothing wider than the screen.
    lefts = page.eval_on_selector_all("main > section", "ss => ss.map(s => Math.round(s.getBoundingClientRect().left))")
    assert len(set(lefts)) == 1
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # Tab from the top of the page reaches "New seed"; Enter rolls a new image; focus is visible.
    src = page.get_attribute("#image", "src")
    page.focus("body")
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "new-seed":
            break
    else:
        pytest.fail("Tab never reached the New seed button")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    page.keyboard.press("Enter")
    wait_new_image(page, src)
    assert page.input_value("#seed") != "11"
