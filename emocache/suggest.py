"""Typo hints for one-line errors: the known name closest to an unknown one (difflib's ratio)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CUTOFF = 0.6
"""Least similarity (difflib ratio, 0..1) a known name needs to be suggested (difflib's default; ours to keep)."""


def closest(name: str, known: Iterable[str], n: int = 1) -> list[str]:
    """Up to ``n`` known names most similar to ``name`` (case-insensitive), best first; [] when none is close."""
    known = list(known)
    by_low: dict[str, str] = {}
    for k in known:
        by_low.setdefault(k.lower(), k)
    return [by_low[m] for m in difflib.get_close_matches(name.lower(), list(by_low), n=n, cutoff=CUTOFF)]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the closest known name, else ``""`` (to put before the list of known names)."""
    best = closest(name, known)
    return f"did you mean {best[0]!r}? " if best else ""
