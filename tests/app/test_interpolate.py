"""GET /interpolate: GIF and PNG strips, slerp/lerp, key frames, loops, class morphs and bad values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.imaging import PADDING
from app.interpolation import frame_latents, morph_labels, path_positions
from tests.app.conftest import COND, UNCOND
from tests.app.images import decode, gif_frames, pixels
from training.latent import latents


def test_gif_download(client: TestClient) -> None:
    r = client.get("/interpolate", params={"label": 1, "from_seed": 3, "to_seed": 9, "frames": 8, "fps": 10,
                                           "scale": 2})
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/gif"
    assert r.headers["content-disposition"] == f'attachment; filename="{COND}-3-9.gif"'
    assert r.headers["x-seed"] == "3,9" and r.headers["x-label"] == "1"
    assert r.headers["cache-control"] == "public, no-cache"  # no version= in the URL: revalidated
    im = decode(r.content)
    assert im.format == "GIF" and im.size == (56, 56) and im.n_frames == 8  # type: ignore[attr-defined]
    assert im.info["duration"] == 100 and im.info["loop"] == 0


def test_gif_frames_are_the_generated_images(client: TestClient) -> None:
    """Open path: the first frame is from_seed's image, the last to_seed's (grey GIF frames are exact)."""
    frames = gif_frames(client.get("/interpolate", params={"label": 0, "from_seed": 5, "to_seed": 6,
                                                           "frames": 6}).content)
    assert len(frames) == 6
    first = pixels(client.get("/generate", params={"label": 0, "seed": 5}).content)
    last = pixels(client.get("/generate", params={"label": 0, "seed": 6}).content)
    assert abs(frames[0].astype(np.int16) - first).max() <= 1
    assert abs(frames[-1].astype(np.int16) - last).max() <= 1


def test_png_strip(client: TestClient) -> None:
    r = client.get("/interpolate", params={"model": UNCOND, "from_seed": 1, "to_seed": 2, "frames": 5,
                                           "format": "png", "scale": 2, "method": "lerp"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"] == f'inline; filename="{UNCOND}-1-2.png"'
    assert "x-label" not in r.headers
    im = decode(r.content)
    assert im.mode == "RGB" and im.size == ((5 * (28 + PADDING) + PADDING) * 2, (28 + 2 * PADDING) * 2)


def test_rgb_gif(client: TestClient) -> None:
    r = client.get("/interpolate", params={"model": UNCOND, "seeds": "1,5,9", "frames": 9, "loop": "true"})
    assert r.status_code == 200
    im = decode(r.content)
    assert im.size == (28, 28) and im.n_frames == 9  # type: ignore[attr-defined]
    assert r.headers["content-disposition"] == f'attachment; filename="{UNCOND}-1-5-9.gif"'


def test_class_morph(client: TestClient) -> None:
    r = client.get("/interpolate", params={"from_label": "circle", "to_label": "t-shirt/top", "from_seed": 4,
                                           "frames": 5, "format": "png"})
    assert r.status_code == 200
    assert r.headers["x-label"] == "0,2" and r.headers["x-seed"] == "4,4"
    assert r.headers["content-disposition"] == f'inline; filename="{COND}-4-4-class0to2.png"'
    strip = pixels(r.content)
    cell = lambda i: strip[PADDING : PADDING + 28, PADDING + i * 30 : PADDING + i * 30 + 28]  # noqa: E731
    start = pixels(client.get("/generate", params={"label": 0, "seed": 4}).content)
    end = pixels(client.get("/generate", params={"label": 2, "seed": 4}).content)
    assert abs(cell(0) - start).max() <= 1 and abs(cell(4) - end).max() <= 1
    assert abs(cell(2) - start).max() > 1  # the middle frame is between classes


def test_same_request_same_bytes_and_304(client: TestClient) -> None:
    params = {"label": 2, "from_seed": 1, "to_seed": 2, "frames": 4}
    a, b = client.get("/interpolate", params=params), client.get("/interpolate", params=params)
    assert a.content == b.content and a.headers["etag"] == b.headers["etag"]
    r = client.get("/interpolate", params=params, headers={"If-None-Match": a.headers["etag"]})
    assert r.status_code == 304 and r.content == b""
    slerp_vs_lerp = client.get("/interpolate", params={**params, "method": "lerp", "frames": 5})
    assert slerp_vs_lerp.headers["etag"] != a.headers["etag"]


def test_unseeded_draws_and_reports(client: TestClient) -> None:
    r = client.get("/interpolate", params={"frames": 3})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    seeds = [int(s) for s in r.headers["x-seed"].split(",")]
    again = client.get("/interpolate", params={"frames": 3, "from_seed": seeds[0], "to_seed": seeds[1],
                                               "label": r.headers["x-label"]})
    assert again.content == r.content


@pytest.mark.parametrize(
    ("params", "status", "needle"),
    [
        ({"frames": 1}, 422, "greater than or equal to 2"),
        ({"frames": 121}, 422, "less than or equal to 120"),
        ({"frames": "many"}, 422, "valid integer"),
        ({"fps": 0}, 422, "greater than or equal to 1"),
        ({"fps": 51}, 422, "less than or equal to 50"),
        ({"scale": 9}, 422, "less than or equal to 8"),
        ({"method": "cubic"}, 422, "'slerp' or 'lerp'"),
        ({"format": "webp"}, 422, "'gif' or 'png'"),
        ({"loop": "maybe"}, 422, "boolean"),
        ({"from_seed": -1}, 422, "greater than or equal to 0"),
        ({"to_seed": 2**32}, 422, "less than or equal to 4294967295"),
        ({"seeds": "1"}, 422, "between 2 and 16"),
        ({"seeds": ",".join(["1"] * 17)}, 422, "between 2 and 16"),
        ({"seeds": "1,x"}, 422, "pattern"),
        ({"seeds": "1,-2"}, 422, "pattern"),
        ({"seeds": "1,99999999999"}, 422, "0…4294967295"),
        ({"seeds": "1,2", "from_seed": 3}, 422, "not both"),
        ({"label": 9}, 422, "not a class"),
        ({"label": 0, "from_label": 0, "to_label": 1}, 422, "not both"),
        ({"from_label": 0}, 422, "needs both"),
        ({"from_label": 0, "to_label": "dress"}, 422, "to_label: 'dress' is not a class"),
        ({"model": UNCOND, "label": 0}, 422, "unconditional"),
        ({"model": UNCOND, "from_label": 0, "to_label": 1}, 422, "unconditional"),
        ({"model": "nope"}, 404, "unknown model"),
        ({"model": "../x"}, 422, "pattern"),
        ({"model": "tiny-ae"}, 422, "not sampleable"),
    ],
)
def test_bad_values(client: TestClient, params: dict[str, object], status: int, needle: str) -> None:
    r = client.get("/interpolate", params=params)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"], r.json()


def test_frame_budget(client: TestClient) -> None:
    # 120 frames of 224×224 is 6 M pixels: within the GIF budget; as one strip it is not.
    ok = client.get("/interpolate", params={"label": 0, "from_seed": 0, "to_seed": 1, "frames": 120, "scale": 8})
    assert ok.status_code == 200 and decode(ok.content).n_frames > 100  # type: ignore[attr-defined]
    strip = client.get("/interpolate", params={"label": 0, "from_seed": 0, "to_seed": 1, "frames": 120,
                                               "scale": 8, "format": "png"})
    assert strip.status_code == 422 and "pixels" in strip.json()["detail"]


# ---------------------------------------------------------------- the path maths


def test_path_positions() -> None:
    assert path_positions(5, loop=False).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert path_positions(4, loop=True).tolist() == [0.0, 0.25, 0.5, 0.75]


@pytest.mark.parametrize("method", ["slerp", "lerp"])
def test_frame_latents_hit_the_keys(method: str) -> None:
    keys = latents([1, 2, 3], 16)
    z = frame_latents(keys, 5, loop=False, method=method)  # u = 0, .5, 1, 1.5, 2
    assert z.shape == (5, 16)
    assert torch.allclose(z[0], keys[0]) and torch.allclose(z[2], keys[1], atol=1e-5)
    assert torch.allclose(z[4], keys[2], atol=1e-5)
    looped = frame_latents(keys, 6, loop=True, method=method)  # u = 0, .5, …, 2.5: back toward key 0
    assert torch.allclose(looped[0], keys[0]) and torch.allclose(looped[4], keys[2], atol=1e-5)


def test_slerp_keeps_the_norm_lerp_does_not() -> None:
    keys = latents([10, 20], 512)
    mid_s = frame_latents(keys, 3, loop=False, method="slerp")[1]
    mid_l = frame_latents(keys, 3, loop=False, method="lerp")[1]
    assert abs(mid_s.norm() - keys[0].norm()) / keys[0].norm() < 0.05
    assert mid_l.norm() < 0.8 * keys[0].norm()


def test_single_key_is_still() -> None:
    keys = latents([7], 4)
    assert torch.allclose(frame_latents(keys, 3, loop=False, method="slerp"), keys.repeat(3, 1))


def test_morph_labels() -> None:
    y = morph_labels(0, 2, 3, 3, loop=False)
    assert torch.allclose(y, torch.tensor([[1.0, 0, 0], [0.5, 0, 0.5], [0, 0, 1.0]]))
    back = morph_labels(0, 1, 2, 4, loop=True)  # 0 → 1 → 0
    assert torch.allclose(back[:, 1], torch.tensor([0.0, 0.5, 1.0, 0.5]))
