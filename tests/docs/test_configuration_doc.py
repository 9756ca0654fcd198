"""docs/configuration.md lists every setting the service reads, with its real default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _rows() -> dict[str, str]:
    """Variable → the default column of its table row."""
    rows = {}
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]  # the other tables are not settings
    for line in section.splitlines():
        m = re.match(r"\|\s*`(GANSERVE_[A-Z0-9_]+)`\s*\|\s*([^|]*)\|", line)
        if m:
            rows[m.group(1)] = m.group(2).strip()
    return rows


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_has_a_row_with_its_default(field: str) -> None:
    rows = _rows()
    var = f"GANSERVE_{field.upper()}"
    assert var in rows, f"{var} is missing from docs/configuration.md"
    default = Settings.model_fields[field].default
    if isinstance(default, bool):
        shown = str(default).lower()
    elif default is None:
        shown = "unset"
    elif isinstance(default, (int, float, str)):
        shown = str(default)
    else:  # lists and paths: written by hand
        return
    doc = rows[var].strip("`")
    if isinstance(default, float):
        assert float(doc) == default, f"{var}: docs/configuration.md says {doc!r}, the code's default is {default!r}"
        return
    assert doc == shown, (
        f"{var}: docs/configuration.md says {rows[var]!r}, the code's default is {shown!r}")


def test_no_row_names_a_setting_that_does_not_exist() -> None:
    known = {f"GANSERVE_{f.upper()}" for f in Settings.model_fields}
    extra = set(_rows()) - known
    assert not extra, f"docs/configuration.md lists settings the service does not read: {sorted(extra)}"
