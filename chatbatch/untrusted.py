"""Text that came from outside (a provider, an input file) made safe to store, log and print.

Pure functions. PostgreSQL refuses NUL in text and length overflows in bounded columns; a
terminal runs escape sequences; a log line must stay one line. Raw response bodies are the one
exception and are stored as received (JSON escapes such as ``\\u0000`` are plain text).
"""

from __future__ import annotations

import re

# Every C0 control, DEL and the C1 controls (Unicode category Cc).
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The same, but for tab and newline, which multi-line messages may keep.
_CONTROLS_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def one_line(value: object, limit: int) -> str:
    """``value`` as text with every control character removed, cut to ``limit`` characters:
    for ids, statuses, codes and model names."""
    return _CONTROLS.sub("", str(value))[:limit]


def multi_line(value: object, limit: int) -> str:
    """``value`` as text keeping tabs and newlines but no other control character (no NUL, no
    CR, no escape sequence), cut to ``limit`` characters: for messages."""
    return _CONTROLS_BUT_LINES.sub("", str(value))[:limit]


def has_controls(value: str) -> bool:
    """Whether ``value`` holds a control character (a tab or newline counts)."""
    return _CONTROLS.search(value) is not None


def storable(value: str) -> str:
    """``value`` with NUL removed, the one character a PostgreSQL text column cannot hold."""
    return value.replace("\x00", "") if "\x00" in value else value


def printable(value: object) -> str:
    """``value`` for a terminal: no escape sequences or other control characters, newlines
    and tabs kept."""
    return _CONTROLS_BUT_LINES.sub("", str(value))
