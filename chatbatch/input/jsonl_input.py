"""Read a JSONL file of chat requests line by line and turn each line into a prepared request.

Accepts the OpenAI Batch input shape (``custom_id``, ``method``, ``url``, ``body``), the same
without method/url, and plain lines (``custom_id``? + chat-completions fields).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from chatbatch.input.schemas import ROLES, body_problems, message_problem
from chatbatch.input.sources import ByteProgress, SourceItem
from chatbatch.untrusted import has_controls

MAX_CUSTOM_ID_CHARS = 512
CHAT_URLS = ("/v1/chat/completions", "/chat/completions", "/api/v1/chat/completions")
ENVELOPE_KEYS = {"custom_id", "method", "url", "body"}
DROPPED_KEYS = ("background",)  # we set background mode ourselves
# The types ``schemas.ChatBody`` accepts (strictly) for its typed fields, besides None;
# the fast path checks these itself and leaves anything else to pydantic.
_FAST_TYPES: dict[str, tuple[type, ...]] = {
    "stream": (bool,),
    "temperature": (float, int),
    "top_p": (float, int),
    "presence_penalty": (float, int),
    "frequency_penalty": (float, int),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "n": (int,),
    "seed": (int,),
    "top_logprobs": (int,),
    "retries": (int,),
    "logprobs": (bool,),
    "parallel_tool_calls": (bool,),
    "json_mode": (bool,),
    "enable_search": (bool,),
    "stop": (str,),  # a list of strings is checked item by item
    "tools": (list,),
    "tool_choice": (str, dict),
    "response_format": (dict,),
    "search_config": (dict,),
    "thinking": (dict,),
    "metadata": (dict,),
}
# The (inclusive) ranges ``ChatBody`` sets on some of those fields, checked by the fast path too.
_FAST_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "max_tokens": (1, math.inf),
    "max_completion_tokens": (1, math.inf),
    "n": (1, math.inf),
}
_ROLES = frozenset(ROLES)


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


# (custom_id, model, body as compact JSON bytes): what the loader stores for one line.
RawRequest = tuple[str, str, bytes]
PROGRESS_BYTES = 1 << 20


def iter_lines(path: Path, *, max_line_bytes: int) -> Iterator[tuple[int, str | None, str | None]]:
    """Yield (line number, text, problem) for every non-blank line, reading in constant memory.

    Handles a UTF-8 BOM, CRLF endings and over-long lines (reported, then skipped to the next
    newline without holding them in memory).
    """
    for line_no, raw, problem in iter_raw_lines(path, max_line_bytes=max_line_bytes):
        if raw is None:
            yield line_no, None, problem
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield line_no, None, f"invalid UTF-8 at byte {exc.start}"
            continue
        if text.strip():
            yield line_no, text, None


def iter_raw_lines(
    path: Path, *, max_line_bytes: int, on_bytes: ByteProgress | None = None
) -> Iterator[tuple[int, bytes | None, str | None]]:
    """Yield (line number, bytes, problem) for every line as read (a BOM on line 1 removed),
    in constant memory; an over-long line comes as (line number, None, reason), skipped to the
    next newline without holding it in memory. Blank lines are yielded too. ``on_bytes`` hears
    the bytes read so far about every ``PROGRESS_BYTES``, and at the end."""
    with path.open("rb") as fh:
        line_no = 0
        readline = fh.readline
        limit = max_line_bytes + 1
        read = 0
        next_report = PROGRESS_BYTES
        while True:
            raw = readline(limit)
            if not raw:
                if on_bytes:
                    on_bytes(fh.tell())
                return
            line_no += 1
            read += len(raw)
            if on_bytes and read >= next_report:
                on_bytes(fh.tell())
                next_report = read + PROGRESS_BYTES
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                _skip_rest_of_line(fh)
                yield line_no, None, f"line is longer than the limit of {max_line_bytes} bytes"
                continue
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            yield line_no, raw, None


def _skip_rest_of_line(fh: Any) -> None:
    while True:
        chunk = fh.readline(1 << 20)
        if not chunk or chunk.endswith(b"\n"):
            return


def prepare_raw(raw: bytes, line_no: int, *, default_model: str | None) -> RawRequest | None:
    """Validate one line as read from the file; None for a blank line, LineError with the reason
    for a bad one. Ordinary lines take a fast path (orjson and a few explicit type checks); any
    line it is not sure about goes through ``prepare_line`` (pydantic), which gives the same
    result or the exact reason."""
    prepared = prepare_raw_body(raw, line_no, default_model=default_model)
    if prepared is None:
        return None
    custom_id, model, body = prepared
    return custom_id, model, orjson.dumps(body)


def prepare_raw_body(
    raw: bytes, line_no: int, *, default_model: str | None
) -> tuple[str, str, dict[str, Any]] | None:
    """``prepare_raw`` with the body still a dict (custom_id, model, body), for a caller that
    changes it before storing; the body holds no ``background``."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        fast = _fast_body(obj, line_no, default_model)
        if fast is not None:
            return fast
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"invalid UTF-8 at byte {exc.start}") from None
    if not text.strip():
        return None
    return _checked_body(text, line_no, default_model)


def _prepare_fast(obj: Any, line_no: int, default_model: str | None) -> RawRequest | None:
    """``prepare_line``'s result for a line it accepts, without pydantic; None when unsure."""
    fast = _fast_body(obj, line_no, default_model)
    if fast is None:
        return None
    custom_id, model, body = fast
    return custom_id, model, orjson.dumps(body)


def _fast_body(
    obj: Any, line_no: int, default_model: str | None
) -> tuple[str, str, dict[str, Any]] | None:
    """``_prepare_fast`` with the body left a dict."""
    if type(obj) is not dict:
        return None
    custom_id = obj.get("custom_id")
    # isprintable() is false for every control character (and for a few other odd ones, which
    # the pydantic path then judges) and cheaper than has_controls(): this runs on every line.
    if custom_id is None:
        custom_id = str(line_no)
    elif (
        type(custom_id) is not str
        or len(custom_id) > MAX_CUSTOM_ID_CHARS
        or not custom_id.strip()
        or not custom_id.isprintable()
    ):
        return None
    if "body" in obj:
        body = obj["body"]
        if (
            type(body) is not dict
            or not obj.keys() <= ENVELOPE_KEYS
            or obj.get("method", "POST") != "POST"
            or obj.get("url", CHAT_URLS[0]) not in CHAT_URLS
        ):
            return None
    else:
        body = obj
        body.pop("custom_id", None)
    model = body.get("model")
    if model is None:
        if not default_model:
            return None
        model = body["model"] = default_model
    if type(model) is not str or not model or not model.isprintable() or not _fast_fields_ok(body):
        return None
    body.pop("background", None)
    return custom_id, model, body


def _fast_fields_ok(body: dict[str, Any]) -> bool:
    """Messages and the typed fields are surely valid (and ``stream`` is not true)."""
    messages = body.get("messages")
    if type(messages) is not list or not messages:
        return False
    for message in messages:
        if type(message) is not dict:
            return False
        role = message.get("role")
        if type(role) is not str or role not in _ROLES:
            return False
        content = message.get("content")
        if type(content) is str and role != "tool":
            continue  # the common case, surely fine; any other gets the schema's own check
        if content is not None and type(content) is not str and type(content) is not list:
            return False
        if message_problem(role, content, message) is not None:
            return False
    for key, value in body.items():
        types = _FAST_TYPES.get(key)
        if types is None or value is None:
            continue
        if type(value) not in types and not (
            key == "stop" and type(value) is list and all(type(s) is str for s in value)
        ):
            return False
        limits = _FAST_RANGES.get(key)
        if limits is not None and not limits[0] <= value <= limits[1]:
            return False
    return body.get("stream") is not True


def prepare_line(text: str, line_no: int, *, default_model: str | None) -> PreparedRequest:
    """Validate one JSONL line and normalise it; raises LineError with the reason."""
    custom_id, model, body = _checked_body(text, line_no, default_model)
    return PreparedRequest(line_no, custom_id, model, orjson.dumps(body).decode())


def _checked_body(
    text: str, line_no: int, default_model: str | None
) -> tuple[str, str, dict[str, Any]]:
    """``prepare_line``'s checks (pydantic), returning (custom_id, model, body as a dict)."""
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
    model = body["model"]
    if isinstance(model, str) and has_controls(model):
        problems.append(f"model {control_problem(model)}")
    if problems:
        raise LineError("; ".join(problems))
    if body.get("stream") is True:
        raise LineError('"stream": true is not possible in a batch (results are polled)')
    for key in DROPPED_KEYS:
        body.pop(key, None)
    return custom_id, body["model"], body


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
    if has_controls(custom_id):
        raise LineError(f"custom_id {control_problem(custom_id)}")
    return custom_id


def control_problem(value: str) -> str:
    """Why a text with a control character cannot be an id or a model name (stored in a text
    column, printed and logged as one line): the reason, naming the first such character."""
    code = ord(next(char for char in value if has_controls(char)))
    return f"must not contain control characters such as NUL, tab or newline (found U+{code:04X})"


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


class RequestLines:
    """A JSONL file of chat requests as the loader's source (``chatbatch.input.sources.Source``)."""

    def __init__(self, path: Path, *, default_model: str | None, max_line_bytes: int) -> None:
        self.path = path
        self._default_model = default_model
        self._max_line_bytes = max_line_bytes

    def entries(self, on_bytes: ByteProgress | None = None) -> Iterator[SourceItem]:
        """(line number, (custom_id, model, body, None), None) for each request, (line number,
        None, reason) for each bad line; blank lines are skipped."""
        default_model = self._default_model
        lines = iter_raw_lines(self.path, max_line_bytes=self._max_line_bytes, on_bytes=on_bytes)
        for line_no, raw, problem in lines:
            if raw is None:
                yield line_no, None, problem or "unreadable line"
                continue
            try:
                prepared = prepare_raw_body(raw, line_no, default_model=default_model)
            except LineError as exc:
                yield line_no, None, str(exc)
                continue
            if prepared is not None:
                yield line_no, (*prepared, None), None

    def duplicate(self, custom_id: str, first_line: int) -> str:
        """The problem to report for a repeated custom_id."""
        return f"duplicate custom_id {custom_id!r} (first on line {first_line})"

    def record_columns(self) -> list[str] | None:
        """Request files carry no source records."""
        return None
