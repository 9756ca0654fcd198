"""GET /generate and the permalinks: images, headers, caching, determinism and every bad value."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.imaging import PADDING
from tests.app.conftest import AE, CLASSES, COND, UNCOND
from tests.app.images import decode, pixels
from training.latent import SEED_MAX

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATED = "public, no-cache"  # a seeded URL naming no version (GANSERVE_UNVERSIONED_MAX_AGE_S=0)


def test_default_model_one_image(client: TestClient) -> None:
    r = client.get("/generate", params={"label": 1, "seed": 7})
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-model"] == COND and r.headers["x-seed"] == "7" and r.headers["x-label"] == "1"
    assert r.headers["x-label-name"] == "square"
    assert r.headers["cache-control"] == REVALIDATED
    assert r.headers["x-model-version"] == client.get(f"/models/{COND}").json()["version"]
    assert r.headers["etag"].startswith('"') and r.headers["etag"].endswith('"')
    im = decode(r.content)
    assert im.size == (28, 28) and im.mode == "L"


def test_label_by_name_equals_label_by_index(client: TestClient) -> None:
    by_index = client.get("/generate", params={"label": 2, "seed": 3})
    by_name = client.get("/generate", params={"label": "t-shirt/top", "seed": 3})
    by_case = client.get("/generate", params={"label": "T-Shirt/Top", "seed": 3})
    assert by_index.status_code == by_name.status_code == by_case.status_code == 200
    assert by_index.content == by_name.content == by_case.content
    assert by_name.headers["x-label"] == "2" and by_name.headers["x-label-name"] == "t-shirt%2Ftop"


def test_labels_and_seeds_change_the_image(client: TestClient) -> None:
    a = client.get("/generate", params={"label": 0, "seed": 3}).content
    b = client.get("/generate", params={"label": 1, "seed": 3}).content
    c = client.get("/generate", params={"label": 0, "seed": 4}).content
    assert a != b and a != c


def test_same_request_same_bytes_and_etag(client: TestClient) -> None:
    params = {"model": UNCOND, "seed": 11, "n": 5, "scale": 2, "truncation": 0.7}
    r1, r2 = client.get("/generate", params=params), client.get("/generate", params=params)
    assert r1.content == r2.content and r1.headers["etag"] == r2.headers["etag"]
    other = client.get("/generate", params={**params, "truncation": 0.8})
    assert other.headers["etag"] != r1.headers["etag"] and other.content != r1.content


def test_if_none_match_gives_304(client: TestClient) -> None:
    r = client.get("/generate", params={"label": 0, "seed": 21})
    etag = r.headers["etag"]
    for header in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        again = client.get("/generate", params={"label": 0, "seed": 21}, headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == etag and again.headers["cache-control"] == REVALIDATED
    miss = client.get("/generate", params={"label": 0, "seed": 21}, headers={"If-None-Match": '"other"'})
    assert miss.status_code == 200 and miss.content == r.content


def test_unseeded_says_what_was_drawn(client: TestClient) -> None:
    r = client.get("/generate")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    seed, label = int(r.headers["x-seed"]), int(r.headers["x-label"])
    assert 0 <= seed <= SEED_MAX and 0 <= label < len(CLASSES)
    # The drawn values reproduce the image.
    again = client.get("/generate", params={"seed": seed, "label": label})
    assert again.content == r.content and again.headers["cache-control"] == REVALIDATED


def test_seed_without_label_on_conditional_is_not_immutable(client: TestClient) -> None:
    r = client.get("/generate", params={"seed": 5})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store" and r.headers["x-seed"] == "5"
    assert "x-label" in r.headers


def test_unconditional_has_no_label(client: TestClient) -> None:
    r = client.get("/generate", params={"model": UNCOND, "seed": 1})
    assert r.status_code == 200 and "x-label" not in r.headers
    assert r.headers["cache-control"] == REVALIDATED
    im = decode(r.content)
    assert im.mode == "RGB" and im.size == (28, 28)


@pytest.mark.parametrize(("n", "scale", "rows", "cols"), [(4, 1, 2, 2), (5, 2, 2, 3), (64, 1, 8, 8), (10, 3, 3, 4)])
def test_grid_size(client: TestClient, n: int, scale: int, rows: int, cols: int) -> None:
    r = client.get("/generate", params={"label": "circle", "seed": 100, "n": n, "scale": scale})
    assert r.status_code == 200
    im = decode(r.content)
    assert im.mode == "L"
    assert im.size == ((cols * (28 + PADDING) + PADDING) * scale, (rows * (28 + PADDING) + PADDING) * scale)


def test_scale_is_nearest_neighbour(client: TestClient) -> None:
    small = pixels(client.get("/generate", params={"label": 0, "seed": 9}).content)
    big = pixels(client.get("/generate", params={"label": 0, "seed": 9, "scale": 4}).content)
    assert big.shape == (112, 112)
    assert (big[::4, ::4] == small).all()


def test_grid_cells_are_the_single_seeds(client: TestClient) -> None:
    """Image i of a grid is seed + i — generated inside a batch, within one grey level of alone."""
    grid = pixels(client.get("/generate", params={"label": 2, "seed": 40, "n": 4}).content)
    for i in range(4):
        r, c = divmod(i, 2)
        y, x = PADDING + r * (28 + PADDING), PADDING + c * (28 + PADDING)
        alone = pixels(client.get("/generate", params={"label": 2, "seed": 40 + i}).content)
        assert abs(grid[y : y + 28, x : x + 28] - alone).max() <= 1


def test_permalink_matches_generate(client: TestClient) -> None:
    perm = client.get(f"/models/{COND}/seeds/12.png", params={"label": "square", "scale": 2, "truncation": 0.5})
    gen = client.get("/generate", params={"model": COND, "seed": 12, "label": 1, "scale": 2, "truncation": 0.5})
    assert perm.status_code == 200 and perm.content == gen.content
    assert perm.headers["etag"] == gen.headers["etag"]
    assert perm.headers["cache-control"] == REVALIDATED
    r = client.get(f"/models/{UNCOND}/seeds/{SEED_MAX}.png")
    assert r.status_code == 200 and r.headers["x-seed"] == str(SEED_MAX)


def test_seed_max_grid_fits(client: TestClient) -> None:
    ok = client.get("/generate", params={"model": UNCOND, "seed": SEED_MAX - 3, "n": 4})
    assert ok.status_code == 200
    bad = client.get("/generate", params={"model": UNCOND, "seed": SEED_MAX - 2, "n": 4})
    assert bad.status_code == 422 and str(SEED_MAX - 3) in bad.json()["detail"]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"label": 3}, "use 0–2 or one of: circle, square, t-shirt/top"),
        ({"label": -1}, "not a class"),
        ({"label": "dress"}, "not a class"),
        ({"label": ""}, "not a class"),
        ({"label": "1.5"}, "not a class"),
        ({"label": "٣"}, "not a class"),  # a non-ASCII digit is not an index
        ({"model": UNCOND, "label": 0}, "unconditional"),
        ({"seed": -1}, "greater than or equal to 0"),
        ({"seed": SEED_MAX + 1}, "less than or equal to 4294967295"),
        ({"seed": 10**40}, "less than or equal to"),
        ({"seed": "abc"}, "valid integer"),
        ({"seed": "1e3"}, "valid integer"),
        ({"n": 0}, "greater than or equal to 1"),
        ({"n": 65}, "less than or equal to 64"),
        ({"n": "x"}, "valid integer"),
        ({"scale": 0}, "greater than or equal to 1"),
        ({"scale": 9}, "less than or equal to 8"),
        ({"truncation": 0}, "greater than 0"),
        ({"truncation": 1.5}, "less than or equal to 1"),
        ({"truncation": "nan"}, "finite"),
        ({"truncation": "inf"}, "finite"),
        ({"model": "../etc"}, "pattern"),
        ({"model": ".."}, "pattern"),
        ({"model": "a/b"}, "pattern"),
        ({"model": "UPPER"}, "pattern"),
        ({"model": AE}, "not sampleable"),
    ],
)
def test_bad_values_are_422(client: TestClient, params: dict[str, object], needle: str) -> None:
    r = client.get("/generate", params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    assert needle in r.json()["detail"]


def test_pixel_budget(client: TestClient) -> None:
    # The tiny RGB model: 64 images at scale 8 → (8·30+2)·8 = 1936 px a side, 3.7 M pixels: allowed.
    assert client.get("/generate", params={"model": UNCOND, "seed": 0, "n": 64, "scale": 8}).status_code == 200


def test_unknown_model_is_404_listing_known(client: TestClient) -> None:
    r = client.get("/generate", params={"model": "nope"})
    assert r.status_code == 404
    body = r.json()
    assert "nope" in body["detail"] and COND in body["detail"]
    assert body["allowed"] == sorted([AE, COND, UNCOND])
    perm = client.get("/models/nope/seeds/1.png")
    assert perm.status_code == 404 and COND in perm.json()["detail"]


@pytest.mark.parametrize(
    "path",
    ["/models/tiny-cgan/seeds/-1.png", "/models/tiny-cgan/seeds/abc.png", "/models/tiny-cgan/seeds/1e3.png",
     f"/models/tiny-cgan/seeds/{SEED_MAX + 1}.png", "/models/tiny-cgan/seeds/1.png?label=7",
     "/models/tiny-cgan/seeds/1.png?scale=100", "/models/%2E%2E/seeds/1.png", "/models/UP/seeds/1.png"],
)
def test_bad_permalinks(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


@pytest.mark.parametrize(
    "path", ["/models/a/b/seeds/1.png", "/models/../../etc/passwd", "/models/tiny-cgan/seeds/1.jpg"]
)
def test_paths_that_are_not_routes_are_404(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert "detail" in r.json()


def test_cache_serves_repeats(client: TestClient) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]
    params = {"label": 0, "seed": 31337, "scale": 3}
    first = client.get("/generate", params=params)
    hits = service.metrics.cache.labels("hit")._value.get()
    second = client.get("/generate", params=params)
    assert second.content == first.content
    assert service.metrics.cache.labels("hit")._value.get() == hits + 1


def test_a_models_own_truncation_is_the_default_of_every_route(tmp_path) -> None:
    """A checkpoint measured at ψ (`evaluate --truncation ψ`) is served at ψ unless a request names another."""
    from app.main import create_app
    from tests.app.conftest import make_settings, wait_ready, write_cgan, write_mlp
    from training.checkpoint import update_metrics

    update_metrics(write_mlp(tmp_path), {"truncation": 0.5}, None)
    write_cgan(tmp_path)
    with TestClient(create_app(make_settings(tmp_path))) as client:
        wait_ready(client)
        assert client.get(f"/models/{UNCOND}").json()["truncation"] == 0.5
        assert client.get(f"/models/{COND}").json()["truncation"] == 1.0
        for path, params in (("/generate", {"model": UNCOND, "seed": 4, "n": 3}),
                             (f"/models/{UNCOND}/seeds/4.png", {}),
                             ("/interpolate", {"model": UNCOND, "from_seed": 4, "to_seed": 9, "frames": 3})):
            default = client.get(path, params=params)
            named = client.get(path, params={**params, "truncation": 0.5})
            full = client.get(path, params={**params, "truncation": 1})
            assert default.status_code == named.status_code == full.status_code == 200, path
            assert default.content == named.content != full.content, path
            assert default.headers["etag"] == named.headers["etag"] != full.headers["etag"], path
