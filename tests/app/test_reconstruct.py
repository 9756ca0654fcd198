"""POST /models/{model}/reconstruct and /encode by an encoder (ae, conv-ae, vae with encoder.safetensors):
the same image gives the same bytes and the same z, concurrent uploads share one forward pass, the encoded
z draws the reconstruction, and a VAE served through an ex-post mixture decodes its encoder's mean."""

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
from app.zlatent import decode_z, z_array
from tests.app.conftest import (
    AE,
    _randomise_bn,
    _widen,
    config_dict,
    hold_first_pass,
    make_settings,
    wait_ready,
    write_ae,
    write_cgan,
)
from training.checkpoint import load_encoder, load_generator, save_checkpoint
from training.images import to_uint8
from training.models import build_generator
from training.models.encoders import ConvEncoder

VAE = "tiny-vae"
DECODER = {"class": "DCGenerator", "kwargs": {"z_dim": 6, "num_classes": 0, "channels": 1, "resolution": 28,
                                              "ngf": 4, "upsample": "convT", "bn": "before-act"}}


def write_vae(root: Path, name: str = VAE) -> Path:
    """A tiny VAE served through a 3-component ex-post mixture, with its (ConvEncoder) encoder."""
    torch.manual_seed(3)
    kwargs = {"decoder": DECODER, "components": 3}
    g = build_generator("ExPostGenerator", kwargs)
    _randomise_bn(g, 3)
    _widen(g.decoder)
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(3, 6, 6, generator=gen, dtype=torch.float64) * 0.3
    g.set_mixture(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64), torch.randn(3, 6, generator=gen).double() * 2,
                  a @ a.transpose(1, 2) + torch.eye(6, dtype=torch.float64) * 0.5)
    enc = ConvEncoder(1, 28, 4, 12)
    _randomise_bn(enc, 3)
    _widen(enc, 10)
    cfg = config_dict(name, "ExPostGenerator", {**DECODER["kwargs"], "z_dim": 7}, family="vae")  # type: ignore[dict-item]
    cfg["generator"] = {"class": "ExPostGenerator", "kwargs": kwargs}
    save_checkpoint(root / name, g, cfg, encoder=(enc, "mean-logvar"))
    return root / name


def png(seed: int, size: int = 28, mode: str = "L") -> bytes:
    rs = np.random.RandomState(seed)
    a = np.zeros((size, size), np.uint8)
    a[size // 5 : 4 * size // 5, size // 3 : 2 * size // 3] = rs.randint(120, 256)
    a[rs.randint(0, size), :] = 255
    buf = io.BytesIO()
    Image.fromarray(a, "L").convert(mode).save(buf, "PNG")
    return buf.getvalue()


def post(c: TestClient, url: str, data: bytes, kind: str = "image/png") -> Any:
    return c.post(url, content=data, headers={"content-type": kind})


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    write_cgan(root)
    write_ae(root)
    write_vae(root)
    write_ae(root, "tiny-ae-bare", encoder=False)
    return root


@pytest.fixture(scope="module")
def c(root: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(root))) as client:
        wait_ready(client)
        yield client


def served_pixels(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))


def test_reconstruct_is_the_models_reconstruction_and_the_same_bytes_every_time(c: TestClient, root: Path) -> None:
    for name in (AE, VAE):
        first = post(c, f"/models/{name}/reconstruct", png(1))
        assert first.status_code == 200, first.text
        assert first.headers["content-type"] == "image/png" and first.headers["x-model"] == name
        assert post(c, f"/models/{name}/reconstruct", png(1)).content == first.content
        assert post(c, f"/models/{name}/reconstruct", png(2)).content != first.content
        # What the checkpoint itself computes, by the one reader: at most one grey level apart.
        g, cfg = load_generator(root / name)
        enc = load_encoder(root / name, g, cfg)
        x = torch.from_numpy(served_pixels(png(1)).astype(np.float32))[None, None] / 127.5 - 1
        with torch.no_grad():
            want = to_uint8(g(enc(x), None))[0, :, :, 0].astype(int)
        assert np.abs(served_pixels(first.content).astype(int) - want).max() <= 1
        big = post(c, f"/models/{name}/reconstruct?scale=3", png(1))
        assert served_pixels(big.content).shape == (84, 84)


def test_encode_by_the_encoder_and_its_url_draws_the_reconstruction(c: TestClient, root: Path) -> None:
    for name, z_dim in ((AE, 4), (VAE, 7)):
        r = post(c, f"/models/{name}/encode", png(3))
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["method"] == "encoder" and out["steps"] == 0 and out["label"] is None
        assert post(c, f"/models/{name}/encode", png(3)).json() == out
        card = c.get(f"/models/{name}").json()
        assert out["version"] == card["version"]
        drawn = c.get(out["reconstruction_url"])
        assert drawn.status_code == 200, drawn.text
        assert drawn.content == post(c, f"/models/{name}/reconstruct", png(3)).content
        target = served_pixels(png(3)).astype(np.float64) / 127.5 - 1
        mse = float(((served_pixels(drawn.content) / 127.5 - 1 - target) ** 2).mean())
        assert abs(mse - out["mse"]) < 2e-2
        z = z_array(decode_z(out["z"], z_dim))
        g, cfg = load_generator(root / name)
        enc = load_encoder(root / name, g, cfg)
        x = torch.from_numpy(target.astype(np.float32))[None, None]
        with torch.no_grad():
            assert np.allclose(z, enc(x)[0].numpy(), atol=1e-4)


def test_a_vae_z_decodes_its_encoders_mean_through_the_mixture(c: TestClient, root: Path) -> None:
    out = post(c, f"/models/{VAE}/encode", png(4)).json()
    g, cfg = load_generator(root / VAE)
    enc = load_encoder(root / VAE, g, cfg)
    x = torch.from_numpy(served_pixels(png(4)).astype(np.float32))[None, None] / 127.5 - 1
    z = torch.from_numpy(z_array(decode_z(out["z"], 7)))[None]
    with torch.no_grad():
        assert torch.allclose(g.codes(z), enc.codes(x), atol=1e-4)  # type: ignore[operator]


def test_concurrent_uploads_share_a_forward_pass_and_get_their_own_answers(c: TestClient, root: Path) -> None:
    """One worker held in its first pass: the 7 uploads that queue meanwhile are the next pass, one of 7
    rows, and each gets the bytes it gets alone."""
    alone = {i: post(c, f"/models/{AE}/reconstruct", png(10 + i)).content for i in range(8)}
    app = create_app(make_settings(root, inference_workers=1, max_batch=32))
    with TestClient(app) as client:
        wait_ready(client)
        results: dict[int, bytes] = {}

        def send(i: int) -> None:
            results[i] = post(client, f"/models/{AE}/reconstruct", png(10 + i)).content

        sizes = hold_first_pass(app.state.service.registry.models[AE].image_batchers["reconstruct"], send, 8)
    assert sizes == [1, 7]
    assert results == alone  # the same bytes, batched or alone


def test_cards_say_what_each_model_takes_and_answers(c: TestClient) -> None:
    cards = {m["name"]: m for m in c.get("/models").json()["models"]}
    assert cards[AE]["capabilities"] == ["reconstruct", "encode"] and not cards[AE]["sampleable"]
    assert cards[VAE]["capabilities"] == ["sample", "reconstruct", "encode"]
    assert "mixture" in cards[VAE]["takes"]["encode"] and "mixture" not in cards[AE]["takes"]["encode"]
    assert cards["tiny-cgan"]["capabilities"] == ["sample", "encode"]  # by projection
    assert "projection" in cards["tiny-cgan"]["takes"]["encode"]
    assert cards["tiny-ae-bare"]["capabilities"] == []
    assert cards[AE]["links"]["reconstruct"] == f"/models/{AE}/reconstruct"
    assert len(cards[VAE]["encoder_sha256"]) == 64 and cards["tiny-cgan"]["encoder_sha256"] is None


def test_an_autoencoder_draws_explicit_latents_but_not_seeds(c: TestClient) -> None:
    z = post(c, f"/models/{AE}/encode", png(5)).json()["z"]
    assert c.get(f"/generate?model={AE}&z={z}").status_code == 200
    r = c.get(f"/generate?model={AE}&seed=1")
    assert r.status_code == 422 and "explicit latent" in r.json()["detail"] and AE not in r.json()["allowed"]
    other = post(c, f"/models/{AE}/encode", png(6)).json()["z"]
    gif = c.get(f"/interpolate?model={AE}&from_z={z}&to_z={other}&frames=5")
    assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
    assert c.get(f"/interpolate?model={AE}&from_seed=1&to_seed=2").status_code == 422


def test_bad_requests_name_what_is_allowed(c: TestClient) -> None:
    bare = post(c, "/models/tiny-ae-bare/reconstruct", png(1))
    assert bare.status_code == 422 and bare.json()["allowed"] == [AE, VAE], bare.text
    enc = post(c, "/models/tiny-ae-bare/encode", png(1))
    assert enc.status_code == 422 and enc.json()["allowed"] == [AE, "tiny-cgan", VAE], enc.text
    assert post(c, f"/models/{AE}/encode?label=0", png(1)).status_code == 422  # unconditional
    form = c.post(f"/models/{AE}/encode", files={"image": ("a.png", png(1), "image/png")}, data={"label": "0"})
    assert form.status_code == 422
    assert post(c, f"/models/{AE}/reconstruct?scale=9", png(1)).status_code == 422
    assert post(c, f"/models/{AE}/reconstruct", b"").status_code == 422
    assert post(c, f"/models/{AE}/reconstruct", b"<svg xmlns='http://www.w3.org/2000/svg'/>",
                "image/svg+xml").status_code == 415
    assert post(c, f"/models/{AE}/reconstruct", png(1)[:40]).status_code == 422  # truncated
    assert c.post(f"/models/{AE}/reconstruct", files={"other": ("a.png", png(1), "image/png")}).status_code == 422
    for route in ("reconstruct", "encode", "translate"):
        assert c.get(f"/models/{AE}/{route}").status_code == 405
    # Colour and other sizes are converted to the model's input.
    rgb = post(c, f"/models/{AE}/reconstruct", png(1, 100, "RGB"))
    assert rgb.status_code == 200 and served_pixels(rgb.content).shape == (28, 28)
    multipart = c.post(f"/models/{AE}/reconstruct", files={"image": ("a.png", png(1), "image/png")})
    assert multipart.content == post(c, f"/models/{AE}/reconstruct", png(1)).content
