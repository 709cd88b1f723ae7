"""Turn an HTTP answer (or a transport error) from the provider into an ``Outcome``. Pure.

See ../shared/reference/README.md: 429/5xx/network errors retry, 400/404/413 are final for a POST,
401/402/403 stop the batch, ``failed`` is terminal, unknown statuses keep being polled.

Every answer is untrusted input: classifying never raises (anything unusable is a
``bad_response``), and every value that reaches an outcome is bounded — ids, statuses and codes
are one line of a column's width, messages have no control characters, times and Retry-After
are finite and within range. Raw bodies are kept as received, NUL aside (a text column cannot
hold it; JSON bodies carry it escaped).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import httpx
import orjson

from chatbatch.rules.outcomes import (
    BAD_RESPONSE,
    Accepted,
    AccountBlocked,
    Completed,
    NotFound,
    Outcome,
    Pending,
    Rejected,
    Retryable,
    TaskFailed,
)
from chatbatch.untrusted import has_controls, multi_line, one_line, storable

PENDING_STATUSES = frozenset(
    {"pending", "queued", "created", "submitted", "running", "in_progress", "processing"}
)
SUCCESS_STATUSES = frozenset({"succeed", "success", "succeeded", "completed", "complete", "done"})
FAILED_STATUSES = frozenset(
    {"failed", "fail", "error", "cancelled", "canceled", "incomplete", "expired"}
)
ACCOUNT_STATUSES = frozenset({401, 402, 403})
MAYBE_ACCEPTED_5XX = frozenset({500, 502, 504})
MAX_REMOTE_ID_CHARS = 256
CODE_CHARS = 64  # the width of the status and code columns
MESSAGE_CHARS = 1000
RETRY_AFTER_CAP = 300.0  # CHATBATCH_RETRY_MAX_SECONDS' default; the provider passes the setting
# expires_at numbers above this are milliseconds (in seconds it would be the year 5138).
MILLISECONDS_FROM = 1e11
LATEST_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime can hold


def parse_body(text: str) -> Any:
    """The JSON of a body, tolerating the blank lines GeekAI pads bodies with under load."""
    return orjson.loads(text.lstrip())


def classify_submit(
    status: int, headers: Mapping[str, str], text: str, *, retry_cap: float = RETRY_AFTER_CAP
) -> Outcome:
    """Outcome of ``POST /chat/completions`` with ``background: true``; never raises (an
    unusable answer to a POST may still have been accepted, so it counts as possibly sent)."""

    def classify() -> Outcome:
        if 200 <= status < 300:
            return _classify_accepted(status, headers, text)
        return classify_error(status, headers, text, is_post=True, retry_cap=retry_cap)

    return never_raising(classify, status, maybe_accepted=True)


def classify_poll(
    status: int, headers: Mapping[str, str], text: str, *, retry_cap: float = RETRY_AFTER_CAP
) -> Outcome:
    """Outcome of ``GET /chat/{id}``; never raises."""

    def classify() -> Outcome:
        if 200 <= status < 300:
            return _classify_poll_answer(status, text)
        if status in (404, 410):
            return NotFound(message=_error_message(text) or "task id not found")
        return classify_error(status, headers, text, is_post=False, retry_cap=retry_cap)

    return never_raising(classify, status, maybe_accepted=False)


def bad_response(message: str, *, http_status: int | None, maybe_accepted: bool) -> Retryable:
    """An answer we cannot use: worth asking again, within the request's budget."""
    return Retryable(BAD_RESPONSE, message, http_status=http_status, maybe_accepted=maybe_accepted)


def never_raising(classify: Callable[[], Outcome], status: int, *, maybe_accepted: bool) -> Outcome:
    """``classify()``, or a ``bad_response`` if the answer broke it: one odd answer must never
    take a chunk (or a worker) down with it."""
    try:
        return classify()
    except Exception as exc:
        message = f"unusable answer ({type(exc).__name__})"
        return bad_response(message, http_status=status, maybe_accepted=maybe_accepted)


def _classify_poll_answer(status: int, text: str) -> Outcome:
    try:
        body = parse_body(text)
    except orjson.JSONDecodeError:
        return bad_response("poll answer is not JSON", http_status=status, maybe_accepted=False)
    if not isinstance(body, dict):
        message = "poll answer is not a JSON object"
        return bad_response(message, http_status=status, maybe_accepted=False)
    return _classify_task(body, storable(text.lstrip()), status)


def classify_exception(exc: httpx.HTTPError, *, is_post: bool) -> Retryable:
    """A transport failure. A POST that may have been sent counts as possibly accepted."""
    name = type(exc).__name__
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    code = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_error"
    return Retryable(code, f"{name}: {exc}"[:500], maybe_accepted=is_post and not never_sent)


def _classify_accepted(status: int, headers: Mapping[str, str], text: str) -> Outcome:
    def unusable(message: str) -> Retryable:
        return bad_response(message, http_status=status, maybe_accepted=True)

    try:
        body = parse_body(text)
    except orjson.JSONDecodeError:
        return unusable("accepted answer is not JSON")
    if not isinstance(body, dict):
        return unusable("accepted answer is not an object")
    raw = storable(text.lstrip())
    if "choices" in body and normalise_status(body.get("status"), default="succeed") == "succeed":
        return Completed(raw, body, status, answer_id(body, headers))  # answered at once
    remote_id = body.get("id")
    if not isinstance(remote_id, str) or not remote_id:
        return unusable("accepted answer has no task id")
    if not usable_id(remote_id):
        return unusable("accepted answer's task id is too long or holds control characters")
    remote_status = _status_text(body.get("status") or "pending")
    if normalise_status(remote_status) == "failed":
        return TaskFailed("task_failed", _error_message(text) or "task failed", raw)
    return Accepted(remote_id, remote_status, expires_at_of(body.get("expires_at")))


def _classify_task(body: dict[str, Any], raw: str, status: int) -> Outcome:
    remote_status = body.get("status")
    if "choices" not in body and not isinstance(remote_status, str):
        message = "poll answer has neither a status nor a result"
        return bad_response(message, http_status=status, maybe_accepted=False)
    kind = normalise_status(remote_status, default="succeed" if "choices" in body else None)
    if kind == "succeed":
        return Completed(raw, body, status)
    shown = _status_text(remote_status)
    if kind == "failed":
        message = _error_message(raw) or f"provider reports task {shown}"
        return TaskFailed(one_line(f"task_{shown}", CODE_CHARS), message, raw, status)
    return Pending(shown, known=kind == "pending")


def _status_text(value: Any) -> str:
    """A provider's task status as we store and show it: one line, at most a column's width."""
    return one_line(value, CODE_CHARS)


def normalise_status(value: Any, *, default: str | None = None) -> str | None:
    """Map a provider's task status onto pending / succeed / failed (None if unknown)."""
    if value is None:
        return default
    lowered = one_line(value, CODE_CHARS).strip().lower()
    if lowered in SUCCESS_STATUSES:
        return "succeed"
    if lowered in FAILED_STATUSES:
        return "failed"
    if lowered in PENDING_STATUSES:
        return "pending"
    return None


def answer_id(body: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    """What names a completion given in answer to the POST: its ``id``, else the
    ``x-request-id`` header; None when neither is a usable id."""
    for candidate in (body.get("id"), headers.get("x-request-id")):
        if isinstance(candidate, str) and candidate and usable_id(candidate):
            return candidate
    return None


def usable_id(remote_id: str) -> bool:
    """Whether a provider's id fits its column and can be put in a URL and a log line."""
    return len(remote_id) <= MAX_REMOTE_ID_CHARS and not has_controls(remote_id)


def classify_error(
    status: int, headers: Mapping[str, str], text: str, *, is_post: bool, retry_cap: float
) -> Outcome:
    """Outcome of a non-2xx answer: 401/402/403 block the account, 429/408/5xx retry (a POST
    answered 500/502/504 may have been accepted), anything else rejects the request."""
    message = _describe_status(status, _error_message(text))
    code = _error_code(text) or f"http_{status}"
    if status in ACCOUNT_STATUSES:
        return AccountBlocked(code, message, status)
    retry_after = parse_retry_after(headers, cap=retry_cap)
    if status == 429:
        return Retryable(code, message, retry_after, http_status=status)
    if status == 408 or status >= 500:
        return Retryable(
            code,
            message,
            retry_after,
            maybe_accepted=is_post and status in MAYBE_ACCEPTED_5XX,
            http_status=status,
        )
    return Rejected(code, message, status, storable(text.lstrip()) or None)


def _describe_status(status: int, detail: str | None) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    if status == 402:
        phrase = "Payment Required (insufficient balance?)"
    text = f"provider answered {status} {phrase}"
    return f"{text}: {detail}" if detail else text


def _error_fields(text: str) -> dict[str, Any]:
    try:
        body = parse_body(text)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(body, dict):
        return {}
    error = body.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str):
        return {"message": error}
    return body


def _error_message(text: str) -> str | None:
    """The provider's error message, one bounded text without control characters."""
    fields = _error_fields(text)
    message = fields.get("message") or fields.get("msg")
    if message:
        return multi_line(message, MESSAGE_CHARS)
    stripped = text.strip()
    return multi_line(stripped, 300) if stripped and not stripped.startswith("{") else None


def _error_code(text: str) -> str | None:
    """The provider's error code (or type), one line of the code column's width."""
    fields = _error_fields(text)
    code = fields.get("code") or fields.get("type")
    return one_line(code, CODE_CHARS) or None if code else None


def parse_retry_after(headers: Mapping[str, str], *, cap: float = RETRY_AFTER_CAP) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), if present: finite, at
    least 0 and at most ``cap`` (a provider asking for a day's pause gets ``cap``)."""
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _retry_after_seconds(value.strip())
    if seconds is None:
        return None
    return min(max(0.0, seconds), cap)


def _retry_after_seconds(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        return seconds if math.isfinite(seconds) else math.inf if seconds > 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


def expires_at_of(value: Any) -> datetime | None:
    """A task's ``expires_at`` as a time, in Unix seconds or milliseconds; None when it is not
    a plausible one (the caller then keeps to the configured retention)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return None
    seconds = value / 1000 if value >= MILLISECONDS_FROM else value
    if not seconds <= LATEST_TIMESTAMP:  # also false for NaN
        return None
    return datetime.fromtimestamp(seconds, UTC)
