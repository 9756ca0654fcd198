"""The shipped emoji-cgan is served by category name, as 64×64 RGB PNGs, with its image credits on its card."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from tests.app.conftest import make_settings, wait_ready

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "emoji-cgan"


def test_emoji_cgan_generates_by_category_name(tmp_path: Path) -> None:
    shutil.copytree(SHIPPED, tmp_path / "emoji-cgan")  # the shipped checkpoint alone: a quick start
    with TestClient(create_app(make_settings(tmp_path, default_model="emoji-cgan"))) as client:
        wait_ready(client)
        r = client.get("/generate", params={"model": "emoji-cgan", "label": "animals-nature", "seed": 3})
        assert r.status_code == 200, r.text
        assert r.headers["X-Label"] == "2" and r.headers["X-Label-Name"] == "animals-nature"
        im = Image.open(io.BytesIO(r.content))
        assert im.size == (64, 64) and im.mode == "RGB"
        by_index = client.get("/generate", params={"model": "emoji-cgan", "label": "2", "seed": 3})
        assert by_index.content == r.content
        bad = client.get("/generate", params={"model": "emoji-cgan", "label": "animals"})
        assert bad.status_code == 422 and "animals-nature" in bad.text and "smileys-emotion" in bad.text
        card = client.get("/models/emoji-cgan").json()
        assert "Noto Emoji" in str(card) and "Twemoji" in str(card)
