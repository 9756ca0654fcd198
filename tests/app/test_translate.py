"""POST /models/{model}/translate on a pix2pix translator: the uploaded image resized to its input → its
translation; the same image gives the same bytes, batched or alone; a translator cannot be sampled, and the
other image-in routes name the models that can."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from tests.app.conftest import AE, hold_first_pass, make_settings, wait_ready, write_ae, write_cgan
from tests.translator_fixture import TRANSLATOR, write_translator
from training.checkpoint import load_generator
from training.images import to_uint8


def drawing(seed: int, size: int = 64, mode: str = "L") -> bytes:
    """Black strokes on white, as the Draw canvas sends."""
    rs = np.random.RandomState(seed)
    a = np.full((size, size), 255, np.uint8)
    for _ in range(3):
        r, c = rs.randint(0, size - 8, 2)
        a[r : r + 2, c : c + rs.randint(4, size - c)] = 0
    buf = io.BytesIO()
    Image.fromarray(a, "L").convert(mode).save(buf, "PNG")
    return buf.getvalue()


def post(c: TestClient, url: str, data: bytes) -> Any:
    return c.post(url, content=data, headers={"content-type": "image/png"})


def rgb(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("translators")
    write_translator(root)
    write_cgan(root)
    write_ae(root)
    return root


@pytest.fixture(scope="module")
def c(root: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(root))) as client:
        wait_ready(client)
        yield client


def test_translate_is_the_translators_output_and_the_same_bytes_every_time(c: TestClient, root: Path) -> None:
    r = post(c, f"/models/{TRANSLATOR}/translate", drawing(1))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-model"] == TRANSLATOR
    out = rgb(r.content)
    assert out.shape == (32, 32, 3)
    assert post(c, f"/models/{TRANSLATOR}/translate", drawing(1)).content == r.content
    assert post(c, f"/models/{TRANSLATOR}/translate", drawing(2)).content != r.content
    # What the checkpoint computes on the same 32×32 grey input, by the one reader: one grey level at most.
    g, _ = load_generator(root / TRANSLATOR)
    grey = Image.open(io.BytesIO(drawing(1))).resize((32, 32), Image.Resampling.LANCZOS)
    x = torch.from_numpy(np.asarray(grey, np.float32))[None, None] / 127.5 - 1
    with torch.no_grad():
        want = to_uint8(g(x))[0].astype(int)
    assert np.abs(out.astype(int) - want).max() <= 1
    assert rgb(post(c, f"/models/{TRANSLATOR}/translate?scale=4", drawing(1)).content).shape == (128, 128, 3)
    colour = post(c, f"/models/{TRANSLATOR}/translate", drawing(1, 50, "RGB"))
    assert colour.status_code == 200 and rgb(colour.content).shape == (32, 32, 3)


def test_a_translator_card_and_what_it_refuses(c: TestClient) -> None:
    card = c.get(f"/models/{TRANSLATOR}").json()
    assert card["capabilities"] == ["translate"] and not card["sampleable"]
    assert card["input"] == {"channels": 1, "height": 32, "width": 32, "transform": "edges"}
    assert "edges" in card["takes"]["translate"] and card["links"]["translate"] == f"/models/{TRANSLATOR}/translate"
    gen = c.get(f"/generate?model={TRANSLATOR}&seed=1")
    assert gen.status_code == 422 and "translates images" in gen.json()["detail"]
    assert TRANSLATOR not in gen.json()["allowed"]
    assert c.get(f"/interpolate?model={TRANSLATOR}&from_seed=1&to_seed=2").status_code == 422
    for route, able in (("reconstruct", [AE]), ("encode", [AE, "tiny-cgan"])):
        r = post(c, f"/models/{TRANSLATOR}/{route}", drawing(1))
        assert r.status_code == 422 and r.json()["allowed"] == able, r.text
    other = post(c, "/models/tiny-cgan/translate", drawing(1))
    assert other.status_code == 422 and other.json()["allowed"] == [TRANSLATOR], other.text
    assert c.get(f"/models/{TRANSLATOR}/translate").status_code == 405
    assert post(c, f"/models/{TRANSLATOR}/translate?scale=0", drawing(1)).status_code == 422
    assert post(c, f"/models/{TRANSLATOR}/translate", b"not an image").status_code == 415
    assert c.get("/readyz").status_code == 200


def test_a_service_of_translators_only_is_ready(tmp_path: Path) -> None:
    write_translator(tmp_path)
    with TestClient(create_app(make_settings(tmp_path))) as client:
        wait_ready(client)
        assert post(client, f"/models/{TRANSLATOR}/translate", drawing(3)).status_code == 200
        assert client.get("/generate").status_code == 503  # nothing to sample from


def test_concurrent_translations_share_a_forward_pass(root: Path) -> None:
    app = create_app(make_settings(root, inference_workers=1))
    with TestClient(app) as client:
        wait_ready(client)
        alone = {i: post(client, f"/models/{TRANSLATOR}/translate", drawing(20 + i)).content for i in range(6)}
        results: dict[int, bytes] = {}

        def send(i: int) -> None:
            results[i] = post(client, f"/models/{TRANSLATOR}/translate", drawing(20 + i)).content

        batcher = app.state.service.registry.models[TRANSLATOR].image_batchers["translate"]
        sizes = hold_first_pass(batcher, send, 6)
    assert sizes == [1, 5] and results == alone
