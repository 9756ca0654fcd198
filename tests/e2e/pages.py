"""What the browser tests do to a page: open it once the service is ready, read the bytes behind an
image, move a slider, upload a file."""

from __future__ import annotations

import base64
from typing import Any

TIMEOUT_MS = 15_000


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


def set_range(page: Any, selector: str, value: str) -> None:
    """Move a slider as a drag does: its value changes, then 'input' (and 'change') fire."""
    page.eval_on_selector(selector, """(e, v) => { e.value = v;
        e.dispatchEvent(new Event("input", {bubbles: true}));
        e.dispatchEvent(new Event("change", {bubbles: true})); }""", value)


def upload(page: Any, selector: str, name: str, mime: str, data: bytes) -> None:
    page.set_input_files(selector, files=[{"name": name, "mimeType": mime, "buffer": data}])


def stroke(page: Any, points: list[tuple[int, int]], selector: str = "#draw-canvas") -> None:
    """Draw with the mouse through ``points`` (the canvas's own pixels): press, move, release. The canvas
    is scrolled into view first, and stays put while the mouse moves."""
    page.locator(selector).scroll_into_view_if_needed()
    box = page.locator(selector).bounding_box()
    k = box["width"] / page.eval_on_selector(selector, "c => c.width")

    def at(p: tuple[int, int]) -> tuple[float, float]:  # the screen position of a pixel's centre
        return box["x"] + (p[0] + 0.5) * k, box["y"] + (p[1] + 0.5) * k

    page.mouse.move(*at(points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*at(p), steps=4)
    page.mouse.up()
