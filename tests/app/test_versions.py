"""Caching and versions: a model's version on its card and in X-Model-Version; URLs naming it are
immutable, URLs naming none are revalidated, URLs naming another one are 404; hot replacement."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.conftest import COND, UNCOND, make_settings, wait_for, wait_ready, write_cgan
from training.checkpoint import read_config

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATED = "public, no-cache"

# One seeded request of every image route (path, query without version).
ROUTES: list[tuple[str, dict[str, Any]]] = [
    ("/generate", {"label": 1, "seed": 7}),
    ("/generate", {"model": UNCOND, "seed": 3, "n": 4, "scale": 2, "truncation": 0.5}),
    (f"/models/{COND}/seeds/12.png", {"label": "square"}),
    ("/interpolate", {"label": 0, "from_seed": 1, "to_seed": 2, "frames": 4}),
    ("/interpolate", {"model": UNCOND, "seeds": "1,5,9", "frames": 6, "format": "png"}),
]


def version_of(client: TestClient, model: str) -> str:
    v: str = client.get(f"/models/{model}").json()["version"]
    return v


def forward_passes(client: TestClient) -> float:
    """Batched forward passes run so far, over every model (the batch-size histogram's count)."""
    text = client.get("/metrics").text
    return sum(float(m) for m in re.findall(r'^ganserve_batch_size_count\{[^}]*\} (\S+)$', text, re.M))


def test_the_card_names_the_weights_version(client: TestClient, tiny_checkpoints: Path) -> None:
    for name in (COND, UNCOND):
        card = client.get(f"/models/{name}").json()
        sha = read_config(tiny_checkpoints / name).generator_sha256
        assert card["version"] == sha[:12] == card["generator_sha256"][:12]
        assert re.fullmatch(r"[0-9a-f]{12}", card["version"])
        assert card["links"]["seed_0"] == f"/models/{name}/seeds/0.png?version={card['version']}"
    listed = {m["name"]: m["version"] for m in client.get("/models").json()["models"]}
    assert listed[COND] == version_of(client, COND)


@pytest.mark.parametrize(("path", "params"), ROUTES)
def test_versioned_urls_are_immutable_and_unversioned_ones_revalidated(
        client: TestClient, path: str, params: dict[str, Any]) -> None:
    model = params.get("model", COND)
    version = version_of(client, model)
    plain = client.get(path, params=params)
    pinned = client.get(path, params={**params, "version": version})
    assert plain.status_code == pinned.status_code == 200, (plain.text, pinned.text)
    assert plain.headers["cache-control"] == REVALIDATED
    assert pinned.headers["cache-control"] == IMMUTABLE
    assert plain.headers["x-model-version"] == pinned.headers["x-model-version"] == version
    # The same image: the same bytes and the same strong ETag, whichever way the URL names it.
    assert plain.content == pinned.content and plain.headers["etag"] == pinned.headers["etag"]
    assert not plain.headers["etag"].startswith("W/")
    # 304 for both, with their own Cache-Control and the version, and no forward pass.
    before = forward_passes(client)
    for params_, cache in ((params, REVALIDATED), ({**params, "version": version}, IMMUTABLE)):
        again = client.get(path, params=params_, headers={"If-None-Match": plain.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["cache-control"] == cache and again.headers["x-model-version"] == version
    assert forward_passes(client) == before


@pytest.mark.parametrize(("path", "params"), ROUTES)
def test_a_version_that_is_not_loaded_is_404_naming_the_loaded_one(
        client: TestClient, path: str, params: dict[str, Any]) -> None:
    version = version_of(client, params.get("model", COND))
    other = "0123456789ab" if version != "0123456789ab" else "ba9876543210"
    r = client.get(path, params={**params, "version": other})
    assert r.status_code == 404, r.text
    body = r.json()
    assert other in body["detail"] and version in body["detail"] and body["allowed"] == [version]


@pytest.mark.parametrize("bad", ["", "0123456789AB", "0123456789a", "0123456789abc", "g123456789ab", "latest"])
def test_a_malformed_version_is_422(client: TestClient, bad: str) -> None:
    for path, params in ROUTES[::2]:
        r = client.get(path, params={**params, "version": bad})
        assert r.status_code == 422 and "version" in r.json()["detail"], (path, r.text)


def test_drawn_seeds_are_never_stored_even_when_versioned(client: TestClient) -> None:
    version = version_of(client, COND)
    r = client.get("/generate", params={"version": version})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert r.headers["x-model-version"] == version
    assert client.get("/generate", params={"version": "0123456789ab"}).status_code == 404


def test_fast_path_and_fastapi_agree_on_versions(tiny_checkpoints: Path) -> None:
    with TestClient(create_app(make_settings(tiny_checkpoints, fast_path=True))) as fast, \
            TestClient(create_app(make_settings(tiny_checkpoints, fast_path=False))) as slow:
        wait_ready(fast)
        wait_ready(slow)
        version = version_of(fast, COND)
        for query in (f"seed=4&label=0&version={version}", "seed=4&label=0", "seed=4&label=0&version=0123456789ab",
                      "seed=4&label=0&version=ABC", f"seed=4&label=0&version={version}&version={version}"):
            a, b = fast.get(f"/generate?{query}"), slow.get(f"/generate?{query}")
            assert a.status_code == b.status_code and a.content == b.content, query
            assert list(a.headers.items()) == list(b.headers.items()), query


def test_unversioned_max_age_is_a_setting(tiny_checkpoints: Path) -> None:
    with TestClient(create_app(make_settings(tiny_checkpoints, unversioned_max_age_s=30))) as client:
        wait_ready(client)
        r = client.get("/generate", params={"label": 0, "seed": 1})
        assert r.headers["cache-control"] == "public, max-age=30"
        pinned = client.get("/generate", params={"label": 0, "seed": 1, "version": version_of(client, COND)})
        assert pinned.headers["cache-control"] == IMMUTABLE
    with pytest.raises(ValueError, match="less than or equal to 60"):
        Settings(unversioned_max_age_s=61)


def test_replacing_a_checkpoint_in_place(tmp_path: Path) -> None:
    """Retrained in place: the unversioned URL gives the new bytes and a new ETag (an old ETag gets
    the new image, not a 304); the URL naming the old version is 404 naming the new one."""
    write_cgan(tmp_path, seed=0)
    with TestClient(create_app(make_settings(tmp_path, reload_interval_s=0.05))) as client:
        wait_ready(client)
        old = version_of(client, COND)
        params = {"label": 2, "seed": 8}
        plain = client.get("/generate", params=params)
        pinned = client.get(f"/models/{COND}/seeds/8.png", params={"label": 2, "version": old})
        assert pinned.content == plain.content and pinned.headers["cache-control"] == IMMUTABLE

        write_cgan(tmp_path, seed=5)  # new weights into the served folder
        wait_for(lambda: version_of(client, COND) != old)
        new = version_of(client, COND)
        assert new == read_config(tmp_path / COND).version

        after = client.get("/generate", params=params, headers={"If-None-Match": plain.headers["etag"]})
        assert after.status_code == 200 and after.content != plain.content
        assert after.headers["etag"] != plain.headers["etag"] and after.headers["x-model-version"] == new
        assert after.headers["cache-control"] == REVALIDATED
        gone = client.get(f"/models/{COND}/seeds/8.png", params={"label": 2, "version": old})
        assert gone.status_code == 404 and new in gone.json()["detail"]
        fresh = client.get(f"/models/{COND}/seeds/8.png", params={"label": 2, "version": new})
        assert fresh.status_code == 200 and fresh.content == after.content
        assert fresh.headers["cache-control"] == IMMUTABLE
