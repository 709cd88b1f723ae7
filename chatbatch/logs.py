"""Logging set-up with a filter that scrubs the API key from every record, whatever logs it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from chatbatch.redaction import Redactor


class RedactSecret(logging.Filter):
    """Scrub the key from a record's message, its exception and its stack: tracebacks of
    database errors quote statement parameters, and those hold provider answers."""

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self._redact = Redactor(*secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = self._redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # Only the scrubbed text is shown: a handler that renders the exception itself
            # (rich does) would print the original.
            record.exc_text, record.exc_info = self._redact(record.exc_text), None
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True


def configure_logging(
    level: int, *, secrets: Sequence[str], handler: logging.Handler | None = None
) -> None:
    """Log at ``level`` through ``handler`` (default: plain lines on stderr); never let any of
    ``secrets`` through."""
    if handler is None:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if secrets:
        handler.addFilter(RedactSecret(*secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
