"""training/labels.py: the one label rule of the service and the sampling CLI."""

from __future__ import annotations

import pytest

from training.labels import UnknownLabel, parse_label

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress"]


@pytest.mark.parametrize(("text", "index"), [
    ("0", 0), ("3", 3), ("03", 3), (" 2 ", 2),  # indices (the CLI's earlier rule took "0".."3")
    ("Dress", 3), ("T-shirt/top", 0),  # exact names (so did it)
    ("dress", 3), ("TROUSER", 1), (" pullover\t", 2),  # any case, blanks around
])
def test_accepted(text: str, index: int) -> None:
    assert parse_label(text, NAMES) == index


@pytest.mark.parametrize("text", ["4", "-1", "+1", "1.0", "", " ", "٣", "²", "shirt", "Dress!", "0x1"])
def test_refused_naming_what_is_allowed(text: str) -> None:
    with pytest.raises(UnknownLabel) as e:
        parse_label(text, NAMES, owner="fashion-cgan")
    message = str(e.value)
    assert "of 'fashion-cgan'" in message and "use 0–3 or one of: T-shirt/top, Trouser, Pullover, Dress" in message
    assert isinstance(e.value, ValueError)
