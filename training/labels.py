"""Class labels given as text (``--label`` of ``python -m training sample``, ``label=`` of the service).

One rule, :func:`parse_label`:

* an index: ASCII decimal digits (``"3"``, ``"03"``) naming a class 0…K−1;
* a class name, exactly as in the checkpoint (``"t-shirt/top"``), or in any letter case
  (``"T-Shirt/Top"``);
* blanks around either are ignored (``" 3 "``, ``"dress "``).

Everything else is refused with :class:`UnknownLabel` (a ``ValueError``) whose message names the
allowed indices and classes. This accepts every input the CLI's earlier ``parse_label`` accepted
(an index in range, an exact class name) except indices written in non-ASCII digits (``"٣"``):
those are refused, as the service always refused them (one could also crash the earlier check:
``"²".isdigit()`` is true but ``int("²")`` raises).
"""

from __future__ import annotations

from collections.abc import Sequence

SHOWN = 40  # characters of a refused label quoted back in the error


class UnknownLabel(ValueError):
    """The text names no class; the message says what is allowed."""


def parse_label(text: str, class_names: Sequence[str], owner: str | None = None) -> int:
    """The class index ``text`` names (see the module's rule); ``owner`` (a model name) is named in
    the error message."""
    names = list(class_names)
    value = text.strip()
    if value.isdecimal() and value.isascii():
        index = int(value)
        if 0 <= index < len(names):
            return index
    else:
        if value in names:
            return names.index(value)
        lowered = [n.lower() for n in names]
        if value.lower() in lowered:
            return lowered.index(value.lower())
    shown = text if len(text) <= SHOWN else text[:SHOWN] + "…"
    of = f" of {owner!r}" if owner is not None else ""
    raise UnknownLabel(f"{shown!r} is not a class{of}: use 0–{len(names) - 1} or one of: {', '.join(names)}")
