"""Which entry of a table keyed by model names (exact names and glob patterns) a model falls
under: the price table and the providers file both read their keys this way."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

WILDCARD_CHARS = "*?["


def most_specific(model: str, names: Iterable[str]) -> str | None:
    """The key ``model`` falls under: its exact name, else the longest glob pattern matching it
    (``"gpt-4o*"`` before ``"*"``); None when none does."""
    names = list(names)
    if model in names:
        return model
    matching = [
        name
        for name in names
        if any(c in name for c in WILDCARD_CHARS) and fnmatch.fnmatchcase(model, name)
    ]
    return max(matching, key=len) if matching else None
