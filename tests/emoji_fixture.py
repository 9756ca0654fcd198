"""A tiny stand-in for the emoji download: the folder layout scripts/fetch_emoji.sh leaves, with
31 emoji of every category (plus a Component and a one-vendor emoji that the dataset leaves out),
each drawn by both vendors as a coloured square on a transparent 64×64 field."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

EMOJI_FIXTURE = [  # (code points, category, has both vendors' images)
    *[(f"1F6{i:02X}", "Smileys & Emotion", True) for i in range(14)],
    *[(f"1F46{i}", "People & Body", True) for i in range(10)],
    ("1F436", "Animals & Nature", True), ("1F34E", "Food & Drink", True), ("1F697", "Travel & Places", True),
    ("26BD", "Activities", True), ("1F4F1", "Objects", True), ("2764-FE0F", "Symbols", True),
    ("1F1EB-1F1F7", "Flags", True), ("1F3FB", "Component", True), ("1FAE8", "Smileys & Emotion", False),
]


def make_emoji_dir(root: Path) -> Path:
    """The layout scripts/fetch_emoji.sh leaves, with a few 64×64 RGBA emoji: a square of another colour per vendor."""
    entries = []
    for n, (code, category, both) in enumerate(EMOJI_FIXTURE):
        name = f"{code.lower()}.png"
        entries.append({"unified": code, "image": name, "category": category, "has_img_google": True,
                        "has_img_twitter": both, "has_img_apple": True})
        for v, shade in (("google", 0), ("twitter", 100)):
            if v == "twitter" and not both:
                continue
            folder = root / f"emoji-datasource-{v}" / "img" / v / "64"
            folder.mkdir(parents=True, exist_ok=True)
            im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
            im.paste((n * 9 % 256, shade, 200, 255), (16, 16, 48, 48))
            im.save(folder / name)
    for v in ("google", "twitter"):
        (root / f"emoji-datasource-{v}" / "emoji.json").write_text(json.dumps(entries))
    return root
