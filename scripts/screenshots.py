"""Regenerate the front end's screenshots in docs/screenshots/ (desktop 1280×900 and phone 390×844).

Starts the real service (``uvicorn app.main:app``) on a checkpoints folder, opens ``/`` in headless
Debian Chromium, makes an image grid, an interpolation, a morph of two uploaded images (two of
the model's own drawings) and, when a translator is loaded, a drawing (a face for an emoji translator,
a T-shirt's outline otherwise) and its translation, and saves full-page screenshots:

    python scripts/screenshots.py                      # the shipped ./checkpoints
    python scripts/screenshots.py --checkpoints DIR    # any checkpoints folder
    python scripts/screenshots.py --test-checkpoints   # tiny random test checkpoints (no training needed)
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from tests.e2e.pages import stroke  # noqa: E402
from tests.e2e.server import DESKTOP, PHONE, launch_chromium, running_service, write_test_checkpoints  # noqa: E402

log = logging.getLogger("screenshots")


def pick_view(base: str, model: str | None) -> tuple[str, str | None]:
    """The model to show (the asked one, else the service's default) and its first class, if any."""
    listing = httpx.get(f"{base}/models", timeout=10).json()
    cards = {m["name"]: m for m in listing["models"] if m.get("sampleable", True)}
    if not cards:
        raise SystemExit("no sampleable model in the checkpoints folder")
    name = model if model in cards else (listing.get("default") or sorted(cards)[0])
    if model and model not in cards:
        log.warning("model %s not served; showing %s", model, name)
    classes = cards[name].get("class_names") or []
    return name, (classes[0] if classes else None)


def drawing(face: bool) -> list[list[tuple[float, float]]]:
    """Strokes in [0, 1]²: a smiling face (a circle, two eyes, a mouth) or a T-shirt's outline."""
    if not face:
        return [[(0.3, 0.15), (0.1, 0.3), (0.2, 0.45), (0.3, 0.38), (0.3, 0.9), (0.7, 0.9), (0.7, 0.38),
                 (0.8, 0.45), (0.9, 0.3), (0.7, 0.15), (0.6, 0.22), (0.4, 0.22), (0.3, 0.15)]]
    circle = [(0.5 + 0.4 * math.cos(2 * math.pi * i / 32), 0.5 + 0.4 * math.sin(2 * math.pi * i / 32))
              for i in range(33)]
    mouth = [(0.5 + 0.22 * math.cos(math.pi * i / 12), 0.55 + 0.18 * math.sin(math.pi * i / 12)) for i in range(13)]
    return [circle, [(0.37, 0.35), (0.37, 0.45)], [(0.63, 0.35), (0.63, 0.45)], mouth]


def shoot(page: Any, base: str, model: str, label: str | None, path: Path) -> None:
    fragment = f"#model={model}&seed=0&n=16" + (f"&label={label}" if label else "")
    page.goto(f"{base}/{fragment}")
    page.wait_for_function("document.getElementById('status').textContent === 'Ready'")
    page.wait_for_selector("#image:not([hidden])")
    page.fill("#from-seed", "0")
    page.fill("#to-seed", "1")
    page.fill("#frames", "16")
    page.click("#interpolate")
    page.wait_for_selector("#download:not([hidden])")
    page.wait_for_function("document.getElementById('status').textContent === 'Ready'")
    # Morph two real images: two of the model's own drawings, uploaded and projected back.
    query = f"?label={label}" if label else ""
    for slot, seed in (("a", 3), ("b", 4)):
        png = httpx.get(f"{base}/models/{model}/seeds/{seed}.png{query}", timeout=30).content
        page.set_input_files(f"#morph-file-{slot}", files=[{"name": f"{model}-{seed}.png", "mimeType": "image/png",
                                                            "buffer": png}])
        page.wait_for_selector(f"#morph-rec-{slot}:not([hidden])", timeout=120_000)
    page.wait_for_selector("#morph-download:not([hidden])", timeout=60_000)
    page.wait_for_function("document.getElementById('status').textContent === 'Ready'")
    # Draw, when a translator is loaded: a face for an emoji translator, else a T-shirt's outline.
    if page.is_visible("#draw-canvas"):
        side = page.eval_on_selector("#draw-canvas", "c => c.width")
        for drawn in drawing("emoji" in page.input_value("#draw-model")):
            stroke(page, [(round(x * (side - 1)), round(y * (side - 1))) for x, y in drawn])
        page.wait_for_function("!document.querySelector('#draw-result').parentElement.hasAttribute('aria-busy')")
        page.wait_for_selector("#draw-result:not([hidden])")
    # Reduced motion: the players do not start, so the screenshot shows their first frames every time.
    assert page.get_attribute("#player", "data-frame") == "0"
    assert page.get_attribute("#morph-player", "data-frame") == "0"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    log.info("wrote %s", path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints", help="checkpoints folder to serve")
    src.add_argument("--test-checkpoints", action="store_true", help="serve tiny random test-made checkpoints")
    parser.add_argument("--model", default=None, help="model to show (default: the service's default model)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ganserve-shots-") as tmp:
        folder = write_test_checkpoints(Path(tmp)) if args.test_checkpoints else args.checkpoints.resolve()
        with running_service(folder, default_model=args.model) as base, sync_playwright() as p:
            model, label = pick_view(base, args.model)
            browser = launch_chromium(p)
            try:
                for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
                    context = browser.new_context(viewport=viewport, device_scale_factor=1,
                                                  color_scheme="light", is_mobile=name == "phone",
                                                  reduced_motion="reduce")
                    shoot(context.new_page(), base, model, label, args.out / f"{name}.png")
                    context.close()
            finally:
                browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
