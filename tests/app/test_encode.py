"""POST /models/{model}/encode (projection), /translate, /reconstruct; explicit latents z.

Projection runs for real on the tiny checkpoints (a few Adam steps); the pool tests hold a real
projection at its end with a gate, so what they assert is an order of events, not a timing."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import app.routes.imagesin as imagesin
from app.inference import prepare_for_inference
from app.main import create_app
from app.projection import RESTARTS, differentiable_copy
from app.zlatent import decode_z, encode_z, z_array, z_chars
from tests.app.conftest import make_settings, wait_for, wait_ready
from training.checkpoint import load_generator
from training.images import to_uint8
from training.latent import latent

STEPS = 12


def png(seed: int = 0, mode: str = "L", size: int = 28) -> bytes:
    rs = np.random.RandomState(seed)
    a = np.zeros((size, size), np.uint8)
    a[size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = rs.randint(150, 256)  # a bright block on black
    im = Image.fromarray(a, "L").convert(mode)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def post(c: TestClient, url: str, data: bytes) -> Any:
    return c.post(url, content=data, headers={"content-type": "image/png"})


@pytest.fixture(scope="module")
def c(tiny_checkpoints: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(tiny_checkpoints, projection_steps=STEPS, projection_workers=1,
                                   projection_queue=0))
    with TestClient(app) as client:
        wait_ready(client)
        yield client


def pixels(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)), np.float64) / 127.5 - 1.0


def test_encode_gives_the_same_z_for_the_same_image_and_its_url_draws_the_optimised_image(c: TestClient) -> None:
    first = post(c, "/models/tiny-cgan/encode?label=square", png(1))
    second = post(c, "/models/tiny-cgan/encode?label=1", png(1))
    assert first.status_code == 200, first.text
    out = first.json()
    assert second.json() == out  # bit for bit: the same z, the same error
    card = c.get("/models/tiny-cgan").json()
    assert out["model"] == "tiny-cgan" and out["version"] == card["version"] and out["label"] == 1
    assert out["method"] == "projection" and out["steps"] == STEPS
    z = out["z"]
    assert len(z) == z_chars(8) and len(decode_z(z, 8)) == 32
    assert out["reconstruction_url"] == f"/generate?model=tiny-cgan&z={z}&label=1&version={card['version']}"
    drawn = c.get(out["reconstruction_url"])
    assert drawn.status_code == 200 and drawn.headers["cache-control"].endswith("immutable")
    # The URL draws the image the projection scored: its error to the upload is the reported one
    # (up to the PNG's 8-bit rounding), and lower than the seeded start's.
    target = pixels(png(1))
    assert abs(float(((pixels(drawn.content) - target) ** 2).mean()) - out["mse"]) < 2e-3
    start = c.get(f"/generate?model=tiny-cgan&z={encode_z(latent(0, 8))}&label=1")
    assert out["mse"] < float(((pixels(start.content) - target) ** 2).mean())
    other = post(c, "/models/tiny-cgan/encode?label=1", png(2)).json()
    assert other["z"] != z


def test_the_reconstruction_url_draws_what_the_projection_made(c: TestClient, tiny_checkpoints: Path) -> None:
    """The served image of the returned z against the projection's own forward pass (autograd on, the
    differentiable copy of the served module): at most one grey level apart."""
    out = post(c, "/models/tiny-cgan/encode?label=2", png(6)).json()
    generator, _ = load_generator(tiny_checkpoints / "tiny-cgan")
    projecting = differentiable_copy(prepare_for_inference(generator))
    z = torch.from_numpy(z_array(decode_z(out["z"], 8)))[None].repeat(RESTARTS, 1)  # as in its batch of starts
    with torch.enable_grad():
        made = to_uint8(projecting(z, torch.full((RESTARTS,), 2)))[0, :, :, 0].astype(int)
    drawn = np.asarray(Image.open(io.BytesIO(c.get(out["reconstruction_url"]).content)), int)
    assert np.abs(made - drawn).max() <= 1


def test_encode_on_an_unconditional_model_and_the_label_rules(c: TestClient) -> None:
    rgb = png(3, "RGB")
    r = post(c, "/models/tiny-mlp/encode", rgb)
    assert r.status_code == 200 and "label" not in r.json()["reconstruction_url"] and r.json()["label"] is None
    assert c.get(r.json()["reconstruction_url"]).status_code == 200
    assert post(c, "/models/tiny-mlp/encode?label=0", rgb).status_code == 422  # unconditional: no label
    missing = post(c, "/models/tiny-cgan/encode", png(1))
    assert missing.status_code == 422 and "conditional" in missing.json()["detail"]
    assert missing.json()["allowed"] == ["circle", "square", "t-shirt/top"]
    assert post(c, "/models/tiny-cgan/encode?label=9", png(1)).status_code == 422
    both = c.post("/models/tiny-cgan/encode?label=0", files={"image": ("a.png", png(1), "image/png")},
                  data={"label": "1"})
    assert both.status_code == 422 and "different" in both.json()["detail"]
    form = c.post("/models/tiny-cgan/encode", files={"image": ("a.png", png(1), "image/png")}, data={"label": "1"})
    query = post(c, "/models/tiny-cgan/encode?label=1", png(1))
    assert form.status_code == 200 and form.json()["z"] == query.json()["z"]


def test_routes_that_cannot_answer_name_the_models_that_can(c: TestClient) -> None:
    r = post(c, "/models/tiny-cgan/translate", png(1))
    assert r.status_code == 422 and "no loaded model can translate" in r.json()["detail"], r.text
    r = post(c, "/models/tiny-cgan/reconstruct", png(1))
    assert r.status_code == 422 and r.json()["allowed"] == ["tiny-ae"] and "tiny-ae" in r.json()["detail"], r.text
    for route in ("translate", "reconstruct"):
        unknown = post(c, f"/models/nope/{route}", png(1))
        assert unknown.status_code == 404 and "tiny-cgan" in unknown.json()["detail"]
        assert c.get(f"/models/tiny-cgan/{route}").status_code == 405
    assert post(c, "/models/nope/encode", png(1)).status_code == 404
    assert c.get("/models/tiny-cgan/encode").status_code == 405
    assert c.put("/models/tiny-cgan/encode").status_code == 405


def test_a_full_projection_pool_answers_503_and_sampling_goes_on(c: TestClient, monkeypatch) -> None:
    """One worker, no queue: while a (real) projection is held at its end, a second encode gets 503 +
    Retry-After, and seeded and interpolated images are answered — all before the projection returns."""
    gate, started = threading.Event(), threading.Event()
    real = imagesin.project

    def held(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        started.set()
        assert gate.wait(60)
        return result

    monkeypatch.setattr(imagesin, "project", held)
    results: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: results.setdefault("r", post(c, "/models/tiny-cgan/encode?label=0",
                                                                          png(4))))
    worker.start()
    try:
        assert started.wait(60)
        busy = post(c, "/models/tiny-cgan/encode?label=0", png(5))
        assert busy.status_code == 503 and busy.headers["retry-after"] == "2", busy.text
        for seed in range(5):
            assert c.get(f"/generate?seed={seed}&label=1").status_code == 200
        assert c.get("/interpolate?label=0&from_seed=1&to_seed=2&frames=4").status_code == 200
        assert worker.is_alive() and "r" not in results  # the projection is still held
    finally:
        gate.set()
        worker.join(60)
    assert results["r"].status_code == 200
    monkeypatch.setattr(imagesin, "project", real)
    wait_for(lambda: post(c, "/models/tiny-cgan/encode?label=0", png(5)).status_code == 200)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_stays_flat_over_many_uploads(tiny_checkpoints: Path) -> None:
    """300 uploads of a 256×256 JPEG (decoded, resized, projected 1 step): the process's RSS after
    them is within a few MiB of the RSS after the first 50 (printed for the report)."""
    rs = np.random.RandomState(0)
    buf = io.BytesIO()
    Image.fromarray(rs.randint(0, 256, (256, 256, 3), dtype=np.uint8), "RGB").save(buf, "JPEG")
    photo = buf.getvalue()
    app = create_app(make_settings(tiny_checkpoints, projection_steps=1))
    with TestClient(app) as client:
        wait_ready(client)

        def upload(i: int) -> None:
            r = client.post("/models/tiny-cgan/encode?label=0", content=photo, headers={"content-type": "image/jpeg"})
            assert r.status_code == 200, r.text

        for i in range(50):
            upload(i)
        start = _rss_kib()
        for i in range(300):
            upload(i)
        end = _rss_kib()
    print(f"RSS after 50 uploads {start / 1024:.1f} MiB, after 300 more {end / 1024:.1f} MiB")
    assert end - start < 16 * 1024, (start, end)


# --- explicit latents --------------------------------------------------------------------------


def test_z_draws_what_its_seed_draws_and_is_cached_like_a_seed(c: TestClient) -> None:
    z = encode_z(latent(7, 8))
    by_seed = c.get("/generate?seed=7&label=2&truncation=1&scale=2")
    by_z = c.get(f"/generate?z={z}&label=2&scale=2")
    assert by_z.status_code == 200 and by_z.content == by_seed.content
    assert "x-seed" not in by_z.headers and by_z.headers["cache-control"] == "public, no-cache"
    assert c.get(f"/generate?z={z}==&label=2&scale=2".replace("==", "=")).headers["etag"] == by_z.headers["etag"]
    assert c.get(f"/generate?z={z}&label=2&scale=2", headers={"If-None-Match": by_z.headers["etag"]}).status_code == 304
    permalink = c.get(f"/models/tiny-cgan/z/{z}.png?label=2&scale=2")
    assert permalink.content == by_z.content and permalink.headers["etag"] == by_z.headers["etag"]
    version = by_z.headers["x-model-version"]
    assert c.get(f"/generate?z={z}&label=2&version={version}").headers["cache-control"].endswith("immutable")
    assert c.get(f"/generate?z={z}&label=2&version=000000000000").status_code == 404
    # A truncation given scales the latent, as it scales a seed's.
    assert c.get(f"/generate?z={z}&label=2&truncation=0.5").content == \
        c.get("/generate?seed=7&label=2&truncation=0.5").content
    # No label on a conditional model: drawn, so not cacheable.
    assert c.get(f"/generate?z={z}").headers["cache-control"] == "no-store"


def test_z_keys_of_an_interpolation(c: TestClient) -> None:
    za, zb = encode_z(latent(3, 8)), encode_z(latent(9, 8))
    seeds = c.get("/interpolate?label=1&from_seed=3&to_seed=9&frames=5&truncation=1&format=png")
    both = c.get(f"/interpolate?label=1&from_z={za}&to_z={zb}&frames=5&format=png")
    mixed = c.get(f"/interpolate?label=1&from_seed=3&to_z={zb}&frames=5&format=png&truncation=1")
    assert both.status_code == mixed.status_code == 200
    assert both.content == seeds.content == mixed.content
    assert both.headers["x-seed"].startswith("z") and mixed.headers["x-seed"].startswith("3,z")
    assert both.headers["etag"] != seeds.headers["etag"]
    gif = c.get(f"/interpolate?from_label=0&to_label=2&from_z={za}&frames=4")
    assert gif.status_code == 200 and 'filename="tiny-cgan-z' in gif.headers["content-disposition"]


@pytest.mark.parametrize(("query", "words"), [
    ("seed=1&z={z}", "not both"),
    ("z={z}&n=2", "n must be 1"),
    ("z={z}AAAA", "too long"),
    ("z={short}", "wrong length"),
    ("z={nan}", "finite"),
    ("z={inf}", "finite"),
    ("z={plus}", "not base64url"),
    ("z={z}%3D%3D", "too long"),
    ("z={bad_pad}", "not base64url"),
    ("z=", "wrong length"),
    ("z={huge}", "too long"),
])
def test_bad_z_is_422_naming_the_expected_length(c: TestClient, query: str, words: str) -> None:
    z = encode_z(latent(1, 8))
    values = {"z": z, "short": z[:-2], "nan": encode_z(np.r_[np.ones(7), np.nan].astype(np.float32)),
              "inf": encode_z(np.r_[np.ones(7), -np.inf].astype(np.float32)), "plus": z[:-1] + "+",
              "bad_pad": z[:-2] + "=" + z[-1], "huge": "A" * 6000}
    urls = [f"/generate?label=1&{query.format(**values)}"]
    if query.startswith("z={") and query.endswith("}"):  # the value alone: the permalink takes it too
        urls.append(f"/models/tiny-cgan/z/{query[2:].format(**values)}.png?label=1")
    for url in urls:
        r = c.get(url)
        assert r.status_code == 422, (url, r.text)
        assert words in r.json()["detail"], r.json()
        if words not in ("not both", "n must be 1"):
            assert "8 little-endian float32 values = 32 bytes: 43 characters" in r.json()["detail"]
    for param in ("from_z", "to_z"):
        r = c.get(f"/interpolate?label=1&{query.replace('z=', param + '=', 1).format(**values)}")
        if query.startswith("z=") and words != "n must be 1":
            assert r.status_code == 422 and words in r.json()["detail"] and param in r.json()["detail"], r.text


def test_z_with_seeds_or_both_spellings_of_a_key_is_422(c: TestClient) -> None:
    z = encode_z(latent(1, 8))
    for q in (f"seeds=1,2&from_z={z}", f"from_seed=1&from_z={z}", f"to_seed=1&to_z={z}"):
        r = c.get(f"/interpolate?label=1&{q}")
        assert r.status_code == 422 and "not both" in r.json()["detail"], q
    # A latent of another model's length.
    assert c.get(f"/generate?model=tiny-mlp&z={z}").status_code == 422
    assert decode_z(encode_z(latent(1, 6)), 6) == latent(1, 6).astype("<f4").tobytes()
