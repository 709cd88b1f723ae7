"""Hostile provider mode: answers a GeekAI look-alike should never send, so tests can prove a
client survives them without crashing, double-billing or leaking its API key.

A background request is poisoned when ``hostile`` is on and its last user message holds
``[[hostile:KIND]]`` (or ``[[script:MARKER]]``, see ``Script``), or when ``hostile_rate`` picks
it by the hash of its fingerprint and the seed. Each KIND is one small function:

* ``POST_KINDS`` answer the POST itself. A 2xx answer means the provider took the request: the
  task is created, billed and counted as accepted, whatever the body says. Any other status
  creates nothing. The ``FIRST_POST_ONLY`` kinds poison only the first POST of a request.
* ``POLL_KINDS`` answer every poll of the task once it is ready (before that: pending/running
  as usual), the same way every time.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import orjson
from aiohttp import web

from simulator.answers import NUL, message_text
from simulator.responses import JSON_TYPE, error_payload, task_failed, task_succeeded, task_summary
from simulator.state import Task

HTML_TYPE = "text/html"
TEXT_TYPE = "text/plain"
WEEK_SECONDS = 7 * 24 * 3600
HOUR_SECONDS = 3600
YEAR_9000 = int(datetime(9000, 1, 1, tzinfo=UTC).timestamp())
YEAR_2999_DATE = format_datetime(datetime(2999, 1, 1, tzinfo=UTC), usegmt=True)
HUGE_ID_LENGTH = 5000
DEEP_LEVELS = 100_000
DEEP_BODY = b"[" * DEEP_LEVELS + b"]" * DEEP_LEVELS
FILLER = b"x" * 65536  # one chunk of a huge body: written again and again, never concatenated
TERMINAL_ESCAPES = "\x1b]0;pwned\x07\x1b[2J"
CONTROLS = NUL + "\x1b[31mred\x1b[0m and a bare\rcarriage return"
KIND_MARK = re.compile(r"\[\[hostile:([^\[\]]*)\]\]")
SCRIPT_MARK = re.compile(r"\[\[script:([^\[\]]*)\]\]")


@dataclass(frozen=True)
class Reply:
    """An exact HTTP answer: status, headers and body bytes (scripts and most kinds send one)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Huge:
    """A 200 JSON answer streamed in chunks up to ``size`` bytes: ``head``, "x" filler, ``tail``
    (at least head and tail when ``size`` is smaller); chunked, so no Content-Length warns."""

    head: bytes
    tail: bytes
    size: int


Answer = Reply | Huge
ReplySource = Reply | Callable[[str, str], Reply]


@dataclass(frozen=True)
class Context:
    """What a poison may use: the caller's bare key and Authorization header, the huge size."""

    key: str
    authorization: str
    body_bytes: int


@dataclass(frozen=True)
class Served:
    """A poisoned poll's answer, and what it counts as: the status it reports (None: none
    readable), whether it serves a completed result, the usage it carries and whether that
    usage is honest (summed in the stats' usage totals)."""

    answer: Answer
    status: str | None = None
    completed: bool = False
    usage: Any = None
    honest: bool = False


PostKind = Callable[[Task, Context], Answer]
PollKind = Callable[[Task, Context], Served]


@dataclass(frozen=True)
class Plan:
    """How one request is poisoned: its name for the stats, and its POST and poll answers."""

    name: str
    post: PostKind | None = None
    poll: PollKind | None = None
    first_post_only: bool = False


class UnknownPoison(ValueError):
    """A marker naming no kind or no registered script (answered 400)."""


# --- helpers -----------------------------------------------------------------------------------


def _json_reply(payload: Any, status: int = 200, **headers: str) -> Reply:
    """``payload`` as a JSON answer (control characters escaped, as JSON requires)."""
    return Reply(status, {"Content-Type": JSON_TYPE, **headers}, orjson.dumps(payload))


def _accepted(task: Task, **changes: Any) -> Reply:
    """The usual background acceptance of ``task`` with some fields changed or added."""
    return _json_reply({**task_summary(task, "pending"), **changes})


def _padded(payload: dict[str, Any], size: int) -> Huge:
    """``payload`` with a "padding" string field that brings it to ``size`` bytes."""
    whole = orjson.dumps({**payload, "padding": ""})
    return Huge(head=whole[:-2], tail=whole[-2:], size=size)


def _json_escaped(text: str) -> bytes:
    """``text`` with every character written as a JSON \\uXXXX escape (surrogate pairs too)."""
    units = text.encode("utf-16-be", "surrogatepass")
    return "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)).encode()


def _rate_limited(retry_after: str) -> Reply:
    """A 429 with the given Retry-After header value."""
    payload = error_payload("Rate limit reached for this model", "rate_limit_exceeded")
    return _json_reply(payload, 429, **{"Retry-After": retry_after})


# --- POST kinds --------------------------------------------------------------------------------


def expires_ms(task: Task, context: Context) -> Answer:
    """Accepted, but expires_at (now + 7 days) in Unix milliseconds, not seconds."""
    return _accepted(task, expires_at=int((time.time() + WEEK_SECONDS) * 1000))


def expires_past(task: Task, context: Context) -> Answer:
    """Accepted, but already expired an hour ago: the result must still be polled for."""
    return _accepted(task, expires_at=int(time.time()) - HOUR_SECONDS)


def expires_far(task: Task, context: Context) -> Answer:
    """Accepted, expiring in the year 9000: beyond what datetime and timestamps hold."""
    return _accepted(task, expires_at=YEAR_9000)


def id_nul(task: Task, context: Context) -> Answer:
    """Accepted (and billed), but the task id carries a NUL: unstorable in PostgreSQL text."""
    middle = len(task.id) // 2
    return _accepted(task, id=task.id[:middle] + NUL + task.id[middle:])


def id_huge(task: Task, context: Context) -> Answer:
    """Accepted, with a 5,000-character task id (the real id, padded)."""
    return _accepted(task, id=(task.id + "-").ljust(HUGE_ID_LENGTH, "x"))


def status_nul(task: Task, context: Context) -> Answer:
    """Accepted, with status "pending" followed by a NUL."""
    return _accepted(task, status="pending" + NUL)


def status_escape(task: Task, context: Context) -> Answer:
    """Accepted, with the status wrapped in terminal colour escapes."""
    return _accepted(task, status="\x1b[31mpending\x1b[0m")


def echo_key_400(task: Task, context: Context) -> Answer:
    """A 400 echoing the Authorization header in error.message and the bare key as error.code."""
    message = f"Invalid request sent with Authorization: {context.authorization}"
    return _json_reply(error_payload(message, context.key, "invalid_request_error"), 400)


def echo_key_json(task: Task, context: Context) -> Answer:
    """A 400 carrying the key with every character a JSON \\uXXXX escape (scrubbers miss it)."""
    body = (
        b'{"error":{"message":"Invalid API key '
        + _json_escaped(context.key)
        + b'","type":"invalid_request_error","code":"invalid_api_key"}}'
    )
    return Reply(400, {"Content-Type": JSON_TYPE}, body)


def echo_key_url(task: Task, context: Context) -> Answer:
    """A 400 text/plain body "auth=" + the key percent-encoded, every byte as %XX."""
    encoded = "".join(f"%{byte:02X}" for byte in context.key.encode())
    return Reply(400, {"Content-Type": TEXT_TYPE}, f"auth={encoded}".encode())


def echo_key_header(task: Task, context: Context) -> Answer:
    """Accepted, but echoing "Bearer <key>" in an X-Echo header and a "debug" field."""
    echo = f"Bearer {context.key}"
    reply = _accepted(task, debug=echo)
    return Reply(reply.status, {**reply.headers, "X-Echo": echo}, reply.body)


def retry_after_inf(task: Task, context: Context) -> Answer:
    """A 429 asking to wait "inf" seconds (first POST only)."""
    return _rate_limited("inf")


def retry_after_huge(task: Task, context: Context) -> Answer:
    """A 429 asking to wait a billion seconds, about 32 years (first POST only)."""
    return _rate_limited("1000000000")


def retry_after_date(task: Task, context: Context) -> Answer:
    """A 429 asking to wait until an HTTP-date in 2999 (first POST only)."""
    return _rate_limited(YEAR_2999_DATE)


def post_not_json(task: Task, context: Context) -> Answer:
    """A 200 HTML page instead of JSON; the task IS created (the provider may have taken it)."""
    body = b"<html><body><h1>Accepted</h1><p>Your request is queued.</p></body></html>"
    return Reply(200, {"Content-Type": HTML_TYPE}, body)


def post_huge(task: Task, context: Context) -> Answer:
    """A 200 acceptance (real task id) padded to ``hostile_body_bytes``, streamed."""
    return _padded(task_summary(task, "pending"), context.body_bytes)


def escape_message(task: Task, context: Context) -> Answer:
    """A 400 whose error message retitles and clears the terminal it is printed on."""
    message = f"Invalid request {TERMINAL_ESCAPES}"
    return _json_reply(error_payload(message, "invalid_request_error"), 400)


# --- poll kinds --------------------------------------------------------------------------------


def usage_huge(task: Task, context: Context) -> Served:
    """Succeeded, with usage 1e300 prompt and 2**70 completion tokens but a total of 12."""
    answer = task_succeeded(task)
    answer["usage"] = {
        **answer["usage"],
        "prompt_tokens": 1e300,
        "completion_tokens": 2**70,
        "total_tokens": 12,
    }
    body = json.dumps(answer, separators=(",", ":")).encode()  # orjson stops at 64-bit ints
    reply = Reply(200, {"Content-Type": JSON_TYPE}, body)
    return Served(reply, "succeed", completed=True, usage=answer["usage"])


def usage_negative(task: Task, context: Context) -> Served:
    """Succeeded, with -50 prompt and -7 completion tokens (total -57)."""
    answer = task_succeeded(task)
    answer["usage"] = {
        **answer["usage"],
        "prompt_tokens": -50,
        "completion_tokens": -7,
        "total_tokens": -57,
    }
    return Served(_json_reply(answer), "succeed", completed=True, usage=answer["usage"])


def content_controls(task: Task, context: Context) -> Served:
    """Succeeded, with NUL, colour escapes and a bare CR in the content, NULs in finish_reason
    and model; the usage is honest."""
    answer = task_succeeded(task)
    choice = answer["choices"][0]
    choice["message"]["content"] += CONTROLS
    choice["finish_reason"] = "stop" + NUL
    answer["model"] = "gpt" + NUL + "x"
    usage = answer["usage"]
    return Served(_json_reply(answer), "succeed", completed=True, usage=usage, honest=True)


def failed_echo_key(task: Task, context: Context) -> Served:
    """Failed, with the poll's Authorization header in error.message and error.code."""
    error = {"message": f"Upstream refused {context.authorization}", "code": context.authorization}
    return Served(_json_reply({**task_failed(task), "error": error}), "failed")


def poll_huge(task: Task, context: Context) -> Served:
    """The finished answer padded to ``hostile_body_bytes``, streamed; its usage is honest but
    not counted in the totals, since a careful client refuses the body."""
    answer = task_succeeded(task)
    huge = _padded(answer, context.body_bytes)
    return Served(huge, "succeed", completed=True, usage=answer["usage"])


def poll_not_json(task: Task, context: Context) -> Served:
    """A 200 HTML page on every poll."""
    return Served(Reply(200, {"Content-Type": HTML_TYPE}, b"<html>oops</html>"))


def poll_deep(task: Task, context: Context) -> Served:
    """A 200 JSON body of 100,000 nested arrays: a recursive parser overflows its stack."""
    return Served(Reply(200, {"Content-Type": JSON_TYPE}, DEEP_BODY))


def poll_status_nul(task: Task, context: Context) -> Served:
    """The finished answer with status "succeed" followed by a NUL; the usage is honest."""
    answer = {**task_succeeded(task), "status": "succeed" + NUL}
    usage = answer["usage"]
    return Served(_json_reply(answer), answer["status"], completed=True, usage=usage, honest=True)


def poll_wrong_types(task: Task, context: Context) -> Served:
    """A "succeed" whose id, choices, usage and model all have the wrong JSON types."""
    answer = {"id": 5, "status": "succeed", "choices": "x", "usage": "lots", "model": {"a": 1}}
    return Served(_json_reply(answer), "succeed", completed=True, usage="lots")


POST_KINDS: dict[str, PostKind] = {
    kind.__name__: kind
    for kind in (
        expires_ms,
        expires_past,
        expires_far,
        id_nul,
        id_huge,
        status_nul,
        status_escape,
        echo_key_400,
        echo_key_json,
        echo_key_url,
        echo_key_header,
        retry_after_inf,
        retry_after_huge,
        retry_after_date,
        post_not_json,
        post_huge,
        escape_message,
    )
}
POLL_KINDS: dict[str, PollKind] = {
    kind.__name__: kind
    for kind in (
        usage_huge,
        usage_negative,
        content_controls,
        failed_echo_key,
        poll_huge,
        poll_not_json,
        poll_deep,
        poll_status_nul,
        poll_wrong_types,
    )
}
KINDS: tuple[str, ...] = (*POST_KINDS, *POLL_KINDS)
FIRST_POST_ONLY = frozenset({"retry_after_inf", "retry_after_huge", "retry_after_date"})


# --- scripts -----------------------------------------------------------------------------------


def resolve(source: ReplySource, task_id: str, key: str) -> Reply:
    """The Reply itself, or what the callable makes of the task id and the caller's key."""
    reply = source(task_id, key) if callable(source) else source
    if not isinstance(reply, Reply):
        raise TypeError(f"a scripted answer must be a Reply, got {reply!r}")
    return reply


@dataclass(frozen=True)
class Script:
    """Scripted answers for requests marked ``[[script:MARKER]]`` (``hostile`` on): ``post``
    answers the POST (a 2xx one still creates, bills and counts the task, whatever its body
    says), ``poll`` every poll once the task is ready. Scripted polls are not counted as served
    results: their usage is the script's to know."""

    post: ReplySource | None = None
    poll: ReplySource | None = None

    def plan(self, marker: str) -> Plan:
        """The plan this script gives a marked request."""
        return Plan(
            name=f"script:{marker}",
            post=None if self.post is None else _scripted_post(self.post),
            poll=None if self.poll is None else _scripted_poll(self.poll),
        )


def _scripted_post(source: ReplySource) -> PostKind:
    """A POST kind answering what ``source`` says."""
    return lambda task, context: resolve(source, task.id, context.key)


def _scripted_poll(source: ReplySource) -> PollKind:
    """A poll kind answering what ``source`` says, counted as no served result."""
    return lambda task, context: Served(resolve(source, task.id, context.key))


def check_marker(marker: str) -> str:
    """``marker`` if a ``[[script:MARKER]]`` can name it; ValueError otherwise."""
    if not isinstance(marker, str) or SCRIPT_MARK.fullmatch(f"[[script:{marker}]]") is None:
        raise ValueError(f"a script marker must be text without brackets: {marker!r}")
    if not marker.strip():
        raise ValueError("a script marker must not be blank")
    return marker.strip()


# --- choosing ----------------------------------------------------------------------------------


def kind_plan(kind: str) -> Plan:
    """The plan of a named KIND; UnknownPoison names the known ones."""
    if kind in POST_KINDS:
        return Plan(kind, post=POST_KINDS[kind], first_post_only=kind in FIRST_POST_ONLY)
    if kind in POLL_KINDS:
        return Plan(kind, poll=POLL_KINDS[kind])
    raise UnknownPoison(f"unknown hostile kind {kind!r}; known kinds: {', '.join(KINDS)}")


def marked_plan(body: dict[str, Any], scripts: Mapping[str, Script]) -> Plan | None:
    """The plan a marker in the last user message names (script markers first); None if
    unmarked; UnknownPoison for an unknown kind or an unregistered script."""
    text = last_user_text(body)
    scripted = SCRIPT_MARK.search(text)
    if scripted is not None:
        marker = scripted.group(1).strip()
        if marker not in scripts:
            known = ", ".join(sorted(scripts)) or "none"
            raise UnknownPoison(f"no script registered for marker {marker!r}; registered: {known}")
        return scripts[marker].plan(marker)
    marked = KIND_MARK.search(text)
    return None if marked is None else kind_plan(marked.group(1).strip())


def poll_kind_named(name: str, scripts: Mapping[str, Script]) -> PollKind | None:
    """The poll answer of the plan called ``name`` (a KIND or "script:MARKER"), for a task read
    back from a durable store; None when it names no poll kind or no registered poll script."""
    if name in POLL_KINDS:
        return POLL_KINDS[name]
    script = scripts.get(name.removeprefix("script:")) if name.startswith("script:") else None
    return None if script is None or script.poll is None else _scripted_poll(script.poll)


def drawn_plan(draw: int | None) -> Plan | None:
    """The KIND a ``hostile_rate`` draw picks (None: the request is left alone)."""
    return None if draw is None else kind_plan(KINDS[draw % len(KINDS)])


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the request's last user message ("" if it has none)."""
    messages = body.get("messages")
    listed = messages if isinstance(messages, list) else []
    users = [m for m in listed if isinstance(m, dict) and m.get("role") == "user"]
    return message_text(users[-1].get("content")) if users else ""


# --- sending -----------------------------------------------------------------------------------


def accepts(answer: Answer) -> bool:
    """True when a POST answer says the provider took the request (a 2xx status)."""
    return isinstance(answer, Huge) or 200 <= answer.status < 300


def status_of(answer: Answer) -> int:
    """The HTTP status ``answer`` is sent with."""
    return 200 if isinstance(answer, Huge) else answer.status


async def send(request: web.Request, answer: Answer) -> web.StreamResponse:
    """Send ``answer``: exact bytes, or a huge body streamed chunk by chunk."""
    if isinstance(answer, Reply):
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
    response = web.StreamResponse(status=200, headers={"Content-Type": JSON_TYPE})
    await response.prepare(request)
    left = answer.size - len(answer.head) - len(answer.tail)
    try:
        await response.write(answer.head)
        while left > 0:
            chunk = FILLER if left >= len(FILLER) else FILLER[:left]
            await response.write(chunk)
            left -= len(chunk)
        await response.write(answer.tail)
        await response.write_eof()
    except ConnectionError:
        pass  # the client hung up on the flood, as a careful client should
    return response
