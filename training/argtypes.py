"""argparse value types shared by the command lines (``python -m training``, ``python -m app``).

Free of torch, so that a launcher can use them without importing it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be in [{lo}, {hi if hi is not None else '∞'}], got {v}")
        return v

    return parse
