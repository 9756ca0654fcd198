"""The "Draw" panel (issue 31), in headless Chromium against the real service and a tiny translator.

Strokes drawn with the mouse (and, dispatched as Pointer Events, with a pen and a finger) go to
``POST /models/{m}/translate`` as the canvas's PNG; the image shown is the API's answer for exactly
those bytes. The canvas is the translator's input pixel for pixel (black lines on white, its input
size); undo and clear; the debounce sends once the drawing rests and once a stroke ends; a newer
drawing aborts the request of an older one; upload by keyboard; errors in the panel's live region;
a clear message when no translator is loaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.e2e.pages import open_ready, shown_bytes, stroke
from tests.translator_fixture import TRANSLATOR

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TRANSLATE = f"/models/{TRANSLATOR}/translate"
SIDE = 32  # the tiny translator's input and output size


def record_translations(page: Any) -> list[bytes]:
    """The bodies of the page's POSTs to the translator, in order (filled as they are sent)."""
    bodies: list[bytes] = []

    def on_request(r: Any) -> None:
        if r.method == "POST" and r.url.endswith(TRANSLATE):
            bodies.append(r.post_data_buffer)

    page.on("request", on_request)
    return bodies


def open_draw(page: Any, base_url: str) -> None:
    open_ready(page, base_url)
    page.wait_for_selector("#draw-canvas:not([hidden])")


def canvas_grey(page: Any) -> np.ndarray:
    """The canvas as it is drawn now, (H, W) grey uint8 (it is black and white)."""
    data = page.eval_on_selector("#draw-canvas", """c => Array.from(
        c.getContext("2d").getImageData(0, 0, c.width, c.height).data)""")
    w, h = page.eval_on_selector("#draw-canvas", "c => [c.width, c.height]")
    return np.asarray(Image.frombytes("RGBA", (w, h), bytes(data)).convert("L"))


def png_grey(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def translated(base_url: str, body: bytes) -> bytes:
    """The API's answer for ``body``, asked directly."""
    r = httpx.post(base_url + TRANSLATE, content=body, headers={"content-type": "image/png"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.content


def wait_settled(page: Any) -> None:
    """No translation due or in flight (the output's frame is busy from the first stroke's pointerdown
    until the latest answer is shown)."""
    page.wait_for_function("!document.querySelector('#draw-result').parentElement.hasAttribute('aria-busy')")


def wait_result(page: Any, before: str | None) -> str:
    """Settled, with another translation on show than ``before`` (its blob URL); its URL."""
    wait_settled(page)
    page.wait_for_function("(old) => { const i = document.getElementById('draw-result');"
                           " return !i.hidden && i.src !== old && i.complete && i.naturalWidth > 0; }", arg=before)
    return str(page.get_attribute("#draw-result", "src"))


def test_strokes_show_the_apis_translation_undo_and_clear(page: Any, base_url: str) -> None:
    bodies = record_translations(page)
    open_draw(page, base_url)
    assert page.eval_on_selector_all("#draw-model option", "os => os.map(o => o.value)") == [TRANSLATOR]
    assert page.eval_on_selector("#draw-canvas", "c => [c.width, c.height]") == [SIDE, SIDE]
    assert (canvas_grey(page) == 255).all()  # white paper
    assert page.is_disabled("#draw-undo") and page.is_disabled("#draw-clear")
    assert page.text_content("#draw-input-caption").startswith("Input: 32 × 32")
    assert page.text_content("#draw-measured") == (
        "Measured on 10,000 held-out pairs: FID 61.4 (real: 0.38), L1 0.074, class accuracy 0.766 (targets: 0.929)."
        " The L1-only baseline, trained as long: FID 70.5, L1 0.075.")

    # A horizontal stroke: the canvas's PNG goes to translate; the image shown is the API's answer to it.
    stroke(page, [(4, 8), (27, 8)])
    first_src = wait_result(page, None)
    sent = bodies[-1]
    grey = png_grey(sent)
    assert grey.shape == (SIDE, SIDE)
    assert (grey == canvas_grey(page)).all()  # what is shown is what is sent
    assert (grey[8, 4:28] == 0).all() and (grey[7, 4:28] == 255).all() and (grey[9, 4:28] == 255).all()
    assert (grey != 0).sum() == SIDE * SIDE - 24  # one pixel wide, no anti-aliasing
    first = shown_bytes(page, "#draw-result")
    assert first == translated(base_url, sent)
    assert Image.open(io.BytesIO(first)).size == (SIDE, SIDE)
    assert page.eval_on_selector("#draw-result", "i => getComputedStyle(i).imageRendering") == "pixelated"
    assert page.eval_on_selector("#draw-result", "i => i.getBoundingClientRect().width") >= SIDE * 4
    assert page.eval_on_selector("#draw-canvas", "c => getComputedStyle(c).touchAction") == "none"
    assert "1 stroke" in page.get_attribute("#draw-canvas", "aria-label")

    # A second stroke: both lines are sent, and the answer changes.
    stroke(page, [(16, 12), (16, 28)])
    src = wait_result(page, first_src)
    both = bodies[-1]
    assert (png_grey(both)[12:29, 16] == 0).all() and (png_grey(both)[8, 4:28] == 0).all()
    assert shown_bytes(page, "#draw-result") == translated(base_url, both) != first

    # Undo: the second stroke is gone; the same drawing as the first gives the same image.
    page.click("#draw-undo")
    wait_result(page, src)
    assert (canvas_grey(page) == grey).all()
    assert (png_grey(bodies[-1]) == grey).all()
    assert shown_bytes(page, "#draw-result") == first
    assert "1 stroke" in page.get_attribute("#draw-canvas", "aria-label")

    # Clear: white paper, no translation, nothing sent for an empty canvas.
    count = len(bodies)
    page.click("#draw-clear")
    assert (canvas_grey(page) == 255).all()
    assert page.is_hidden("#draw-result") and page.is_disabled("#draw-undo") and page.is_disabled("#draw-clear")
    assert page.text_content("#draw-state") == "Cleared: the canvas is empty."
    page.wait_for_timeout(400)  # longer than the debounce
    assert len(bodies) == count


def dispatch_stroke(page: Any, kind: str, pressure: float, points: list[tuple[int, int]], *, down: bool = True,
                    up: bool = True) -> None:
    """Pointer Events of a pen or a finger (``kind``) through ``points``, in one task: down at the first
    point (unless ``down`` is false: the stroke goes on), moves through the others, up at the last."""
    page.eval_on_selector("#draw-canvas", """(c, [kind, pressure, points, down, up]) => {
        const r = c.getBoundingClientRect(), k = r.width / c.width;
        const at = ([x, y]) => ({clientX: r.left + (x + 0.5) * k, clientY: r.top + (y + 0.5) * k});
        const ev = (type, p) => new PointerEvent(type, {pointerId: 7, pointerType: kind, isPrimary: true,
            button: type === "pointermove" ? -1 : 0, buttons: type === "pointerup" ? 0 : 1, pressure,
            bubbles: true, cancelable: true, ...at(p)});
        if (down) c.dispatchEvent(ev("pointerdown", points[0]));
        for (const p of points.slice(1)) c.dispatchEvent(ev("pointermove", p));
        if (up) c.dispatchEvent(ev("pointerup", points[points.length - 1]));
    }""", [kind, pressure, [list(p) for p in points], down, up])


def test_debounced_while_drawing_pen_pressure_and_touch(page: Any, base_url: str) -> None:
    bodies = record_translations(page)
    open_draw(page, base_url)
    # A pen pressed hard, 25 moves at once (one task, so no timer can run between them): nothing is sent
    # until the drawing rests, then one request.
    with page.expect_request(lambda r: r.url.endswith(TRANSLATE)):
        dispatch_stroke(page, "pen", 0.9, [(2 + i, 10) for i in range(26)], up=False)
        assert bodies == []
    wait_settled(page)
    assert len(bodies) == 1
    # The stroke ends: sent at once, without waiting for the debounce.
    with page.expect_request(lambda r: r.url.endswith(TRANSLATE)):
        dispatch_stroke(page, "pen", 0.0, [(27, 10)], down=False)
    wait_settled(page)
    assert len(bodies) == 2
    pen = png_grey(bodies[-1])
    # Pressed hard: one pixel wider than the chosen 1 px.
    assert (pen[10:12, 2:28] == 0).all() and (pen[9, 2:28] == 255).all() and (pen[12, 2:28] == 255).all()
    # A finger at 2 px.
    page.select_option("#draw-width", "2")
    with page.expect_request(lambda r: r.url.endswith(TRANSLATE)):
        dispatch_stroke(page, "touch", 0.5, [(20, 14), (20, 30)])
    wait_settled(page)
    touch = png_grey(bodies[-1])
    assert (touch[14:31, 20:22] == 0).all() and (touch[14:31, 19] == 255).all() and (touch[14:31, 22] == 255).all()
    assert shown_bytes(page, "#draw-result") == translated(base_url, bodies[-1])


def test_a_newer_drawing_aborts_the_older_request(page: Any, base_url: str) -> None:
    bodies = record_translations(page)
    held: list[Any] = []
    failed: list[str] = []

    def hold_the_first(route: Any) -> None:
        if not held:
            held.append(route)  # never answered while the test looks: the page must not wait for it
        else:
            route.continue_()

    page.route(re.compile(r".*/translate$"), hold_the_first)
    page.on("requestfailed", lambda r: failed.append(r.failure or "") if r.url.endswith(TRANSLATE) else None)
    open_draw(page, base_url)
    stroke(page, [(3, 3), (28, 28)])
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1
    stroke(page, [(28, 3), (3, 28)])
    wait_result(page, None)
    assert len(bodies) == 2 and failed and "ABORTED" in failed[0].upper()
    latest = shown_bytes(page, "#draw-result")
    assert latest == translated(base_url, bodies[1])
    assert latest != translated(base_url, bodies[0])
    with contextlib.suppress(Exception):  # the held request was aborted: there is nothing to answer
        held[0].continue_()
    page.wait_for_timeout(300)
    assert shown_bytes(page, "#draw-result") == latest


def edge_drawing(size: int = 64) -> bytes:
    """A 64×64 edge map as one would draw it: a square's outline and a diagonal, black on white."""
    im = Image.new("L", (size, size), 255)
    d = ImageDraw.Draw(im)
    d.rectangle((10, 10, 50, 50), outline=0, width=2)
    d.line((10, 50, 50, 10), fill=0, width=2)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_upload_by_keyboard(page: Any, base_url: str) -> None:
    bodies = record_translations(page)
    open_draw(page, base_url)
    # Tab from the line width reaches the file input; Space opens the file chooser.
    page.focus("#draw-width")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "draw-file"
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Space")
    chooser.value.set_files(files=[{"name": "square.png", "mimeType": "image/png", "buffer": edge_drawing()}])
    wait_result(page, None)
    # The upload is drawn into the canvas at the input size, and that is what is sent and translated.
    sent = png_grey(bodies[-1])
    assert sent.shape == (SIDE, SIDE) and (sent == canvas_grey(page)).all()
    assert sent[5:26, 5].mean() < 200 and sent[2, 2] == 255  # the outline's left side, the white corner
    assert shown_bytes(page, "#draw-result") == translated(base_url, bodies[-1])
    assert page.text_content("#draw-state") == f"Translated “square.png” with {TRANSLATOR}."
    assert "the image “square.png”" in page.get_attribute("#draw-canvas", "aria-label")
    # Strokes go on top of it; undo takes them away again, then the image.
    stroke(page, [(16, 2), (16, 6)])
    page.wait_for_function("document.getElementById('draw-canvas').getAttribute('aria-label').includes('1 stroke')")
    page.click("#draw-undo")
    page.click("#draw-undo")
    assert (canvas_grey(page) == 255).all() and page.is_disabled("#draw-undo")

    # Not an image: said in the panel's live region, nothing sent.
    count = len(bodies)
    page.set_input_files("#draw-file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello\n"}])
    page.wait_for_selector("#draw-state[data-state='bad']")
    assert "“notes.txt” could not be read as an image" in page.text_content("#draw-state")
    assert page.get_attribute("#draw-state", "aria-live") == "polite"
    assert len(bodies) == count


def test_the_apis_error_is_shown_in_the_panel(page: Any, base_url: str) -> None:
    detail = "the translate queue of tiny-edges2shapes is full; retry shortly"
    page.route(re.compile(r".*/translate$"), lambda route: route.fulfill(
        status=503, content_type="application/json", body=json.dumps({"detail": detail}),
        headers={"Retry-After": "2"}))
    open_draw(page, base_url)
    stroke(page, [(5, 5), (20, 5)])
    page.wait_for_selector("#draw-state[data-state='bad']")
    text = page.text_content("#draw-state")
    assert text.startswith("Not translated:") and detail in text and "retry in 2 s" in text
    assert page.is_hidden("#draw-result")


def test_no_translator_loaded_says_so(page: Any, base_url: str) -> None:
    def without_translators(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        body["models"] = [m for m in body["models"] if m["family"] != "pix2pix"]
        route.fulfill(response=response, json=body)

    page.route(re.compile(r".*/models$"), without_translators)
    open_ready(page, base_url)
    page.wait_for_selector("#draw-state[data-state='bad']")
    assert "No translator is loaded" in page.text_content("#draw-state")
    assert "pix2pix checkpoint" in page.text_content("#draw-state")
    assert page.text_content("#draw-placeholder") == "No translator is loaded."
    assert page.is_hidden("#draw-canvas")
    assert page.is_disabled("#draw-model") and page.is_disabled("#draw-file") and page.is_disabled("#draw-undo")
