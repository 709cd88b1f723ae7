"""Read a JSONL file of chat requests line by line and turn each line into a prepared request.

Accepts the OpenAI Batch input shape (``custom_id``, ``method``, ``url``, ``body``), the same
without method/url, and plain lines (``custom_id``? + chat-completions fields).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from chatbatch.schemas import body_problems

MAX_CUSTOM_ID_CHARS = 512
CHAT_URLS = ("/v1/chat/completions", "/chat/completions", "/api/v1/chat/completions")
ENVELOPE_KEYS = {"custom_id", "method", "url", "body"}
DROPPED_KEYS = ("background",)  # we set background mode ourselves


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A validated request ready to store: its body is compact JSON without ``background``."""

    line_no: int
    custom_id: str
    model: str
    body: str


@dataclass(frozen=True, slots=True)
class LineProblem:
    """Why one line was refused."""

    line_no: int
    reason: str


class LineError(ValueError):
    """A line that cannot become a request."""


def iter_lines(path: Path, *, max_line_bytes: int) -> Iterator[tuple[int, str | None, str | None]]:
    """Yield (line number, text, problem) for every non-blank line, reading in constant memory.

    Handles a UTF-8 BOM, CRLF endings and over-long lines (reported, then skipped to the next
    newline without holding them in memory).
    """
    with path.open("rb") as fh:
        line_no = 0
        while True:
            raw = fh.readline(max_line_bytes + 1)
            if not raw:
                return
            line_no += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                _skip_rest_of_line(fh)
                yield line_no, None, f"line is longer than the limit of {max_line_bytes} bytes"
                continue
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line_no, None, f"invalid UTF-8 at byte {exc.start}"
                continue
            if text.strip():
                yield line_no, text, None


def _skip_rest_of_line(fh: Any) -> None:
    while True:
        chunk = fh.readline(1 << 20)
        if not chunk or chunk.endswith(b"\n"):
            return


def prepare_line(text: str, line_no: int, *, default_model: str | None) -> PreparedRequest:
    """Validate one JSONL line and normalise it; raises LineError with the reason."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise LineError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise LineError(f"expected a JSON object, got {type(obj).__name__}")
    custom_id = _custom_id(obj, line_no)
    body = _body_of(obj)
    if "model" not in body or body["model"] is None:
        if not default_model:
            raise LineError('missing "model" (set it in the line or pass --model)')
        body["model"] = default_model
    problems = body_problems(body)
    if problems:
        raise LineError("; ".join(problems))
    if body.get("stream") is True:
        raise LineError('"stream": true is not possible in a batch (results are polled)')
    for key in DROPPED_KEYS:
        body.pop(key, None)
    return PreparedRequest(line_no, custom_id, body["model"], orjson.dumps(body).decode())


def _custom_id(obj: dict[str, Any], line_no: int) -> str:
    custom_id = obj.get("custom_id")
    if custom_id is None:
        return str(line_no)
    if not isinstance(custom_id, str):
        raise LineError(f"custom_id must be a string, got {type(custom_id).__name__}")
    if not custom_id.strip():
        raise LineError("custom_id must not be empty")
    if len(custom_id) > MAX_CUSTOM_ID_CHARS:
        raise LineError(f"custom_id is longer than {MAX_CUSTOM_ID_CHARS} characters")
    if "\x00" in custom_id:
        raise LineError("custom_id must not contain NUL characters")
    return custom_id


def _body_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The chat request inside a line, whichever shape the line has."""
    if "body" not in obj:
        return {k: v for k, v in obj.items() if k != "custom_id"}
    unexpected = sorted(set(obj) - ENVELOPE_KEYS)
    if unexpected:
        raise LineError(f"unexpected field(s) next to body: {', '.join(unexpected)}")
    method = obj.get("method", "POST")
    if method != "POST":
        raise LineError(f'method must be "POST", got {method!r}')
    url = obj.get("url", CHAT_URLS[0])
    if url not in CHAT_URLS:
        raise LineError(f"url must be /v1/chat/completions, got {url!r}")
    body = obj["body"]
    if not isinstance(body, dict):
        raise LineError(f"body must be a JSON object, got {type(body).__name__}")
    return body
