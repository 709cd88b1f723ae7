"""Logging set-up with a filter that scrubs the API key from every record, whatever logs it."""

from __future__ import annotations

import logging


class RedactSecret(logging.Filter):
    """Replace a secret with ``[redacted]`` in the formatted message of every record."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._secret in message:
            record.msg = message.replace(self._secret, "[redacted]")
            record.args = None
        return True


def configure_logging(level: int, *, secret: str | None) -> None:
    """Log to stderr at ``level``; never let ``secret`` through."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if secret:
        handler.addFilter(RedactSecret(secret))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
