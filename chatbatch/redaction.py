"""The API key kept out of everything we store, log, export or print.

A provider may echo the ``Authorization`` header back: raw, JSON-escaped (``\\u0073k-…``,
``\\/``) or URL-encoded (``%73k-…``), once or several times over, or any mix of them.
``Redactor`` matches the key one character at a time, each in any of those spellings, and
replaces it. It is applied where provider text enters (``worker.provider``) and in the log
filter.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"
MIN_KEY_CHARS = 8  # shorter keys could match ordinary text and garble it


class KeyProblem(ValueError):
    """An API key that cannot be used or scrubbed safely."""


def check_key(key: str, *, name: str = "CHATBATCH_API_KEY") -> str:
    """``key`` if it is usable; KeyProblem saying why not (empty, too short, whitespace — a
    trailing newline from a file makes every request fail as if it were a network error)."""
    if not key:
        raise KeyProblem(f"{name} is empty")
    if any(ch.isspace() for ch in key):
        raise KeyProblem(f"{name} contains whitespace (a trailing newline?); remove it")
    if len(key) < MIN_KEY_CHARS:
        raise KeyProblem(
            f"{name} is {len(key)} characters long; keys shorter than {MIN_KEY_CHARS} cannot be "
            "kept out of logs and stored answers safely"
        )
    return key


def _spellings(char: str) -> str:
    """A regex for one character of the key as it may appear in echoed text."""
    code = ord(char)
    # Escaped once or many times over: \u0073, \\u0073, %73, %2573 …
    forms = [re.escape(char), rf"(?i:\\+u{code:04x})"]
    if code < 0x100:
        forms.append(f"(?i:%(?:25)*{code:02x})")
    if char == "/":
        forms.append(r"\\+/")
    return "(?:" + "|".join(forms) + ")"


class Redactor:
    """Replaces the keys (one per provider), in any of their echoed spellings, with
    ``[redacted]``."""

    def __init__(self, *keys: str | None) -> None:
        self._keys = [
            (key, re.compile("".join(_spellings(ch) for ch in key))) for key in keys if key
        ]

    def __call__(self, text: str) -> str:
        """``text`` without the keys."""
        for key, pattern in self._keys:
            text = self._scrub(text, key, pattern)
        return text

    @staticmethod
    def _scrub(text: str, key: str, pattern: re.Pattern[str]) -> str:
        if not text:
            return text
        if key in text:  # the common echo, replaced without the regex
            text = text.replace(key, REDACTED)
        if "\\" not in text and "%" not in text:
            return text  # no escaped spelling can be present
        return pattern.sub(REDACTED, text)

    def optional(self, text: str | None) -> str | None:
        """``text`` without the key, None kept."""
        return None if text is None else self(text)
