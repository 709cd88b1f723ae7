"""Turn an HTTP answer (or a transport error) from the provider into an ``Outcome``. Pure.

See ../shared/reference/README.md: 429/5xx/network errors retry, 400/404/413 are final for a POST,
401/402/403 stop the batch, ``failed`` is terminal, unknown statuses keep being polled.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import httpx
import orjson

from chatbatch.outcomes import (
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

PENDING_STATUSES = frozenset(
    {"pending", "queued", "created", "submitted", "running", "in_progress", "processing"}
)
SUCCESS_STATUSES = frozenset({"succeed", "success", "succeeded", "completed", "complete", "done"})
FAILED_STATUSES = frozenset(
    {"failed", "fail", "error", "cancelled", "canceled", "incomplete", "expired"}
)
ACCOUNT_STATUSES = frozenset({401, 402, 403})
MAYBE_ACCEPTED_5XX = frozenset({500, 502, 504})


def parse_body(text: str) -> Any:
    """The JSON of a body, tolerating the blank lines GeekAI pads bodies with under load."""
    return orjson.loads(text.lstrip())


def classify_submit(status: int, headers: Mapping[str, str], text: str) -> Outcome:
    """Outcome of ``POST /chat/completions`` with ``background: true``."""
    if 200 <= status < 300:
        return _classify_accepted(status, text)
    return _classify_error(status, headers, text, is_post=True)


def classify_poll(status: int, headers: Mapping[str, str], text: str) -> Outcome:
    """Outcome of ``GET /chat/{id}``."""
    if 200 <= status < 300:
        try:
            body = parse_body(text)
        except orjson.JSONDecodeError:
            return Retryable("bad_response", "poll answer is not JSON", http_status=status)
        if not isinstance(body, dict):
            return Retryable("bad_response", "poll answer is not a JSON object", http_status=status)
        return _classify_task(body, text.lstrip(), status)
    if status in (404, 410):
        return NotFound(message=_error_message(text) or "task id not found")
    return _classify_error(status, headers, text, is_post=False)


def classify_exception(exc: httpx.HTTPError, *, is_post: bool) -> Retryable:
    """A transport failure. A POST that may have been sent counts as possibly accepted."""
    name = type(exc).__name__
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    code = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_error"
    return Retryable(code, f"{name}: {exc}"[:500], maybe_accepted=is_post and not never_sent)


def _classify_accepted(status: int, text: str) -> Outcome:
    try:
        body = parse_body(text)
    except orjson.JSONDecodeError:
        return Retryable("bad_response", "accepted answer is not JSON", maybe_accepted=True)
    if not isinstance(body, dict):
        return Retryable("bad_response", "accepted answer is not an object", maybe_accepted=True)
    if "choices" in body and normalise_status(body.get("status"), default="succeed") == "succeed":
        return Completed(text.lstrip(), body, status)  # provider answered synchronously
    remote_id = body.get("id")
    if not isinstance(remote_id, str) or not remote_id:
        return Retryable("bad_response", "accepted answer has no task id", maybe_accepted=True)
    remote_status = str(body.get("status") or "pending")
    if normalise_status(remote_status) == "failed":
        return TaskFailed("task_failed", _error_message(text) or "task failed", text.lstrip())
    return Accepted(remote_id, remote_status, _expires_at(body))


def _classify_task(body: dict[str, Any], raw: str, status: int) -> Outcome:
    remote_status = body.get("status")
    kind = normalise_status(remote_status, default="succeed" if "choices" in body else None)
    if kind == "succeed":
        return Completed(raw, body, status)
    if kind == "failed":
        message = _error_message(raw) or f"provider reports task {remote_status}"
        return TaskFailed(f"task_{remote_status}", message, raw, status)
    return Pending(str(remote_status), known=kind == "pending")


def normalise_status(value: Any, *, default: str | None = None) -> str | None:
    """Map a provider's task status onto pending / succeed / failed (None if unknown)."""
    if value is None:
        return default
    lowered = str(value).strip().lower()
    if lowered in SUCCESS_STATUSES:
        return "succeed"
    if lowered in FAILED_STATUSES:
        return "failed"
    if lowered in PENDING_STATUSES:
        return "pending"
    return None


def _classify_error(
    status: int, headers: Mapping[str, str], text: str, *, is_post: bool
) -> Outcome:
    message = _describe_status(status, _error_message(text))
    code = _error_code(text) or f"http_{status}"
    if status in ACCOUNT_STATUSES:
        return AccountBlocked(code, message, status)
    if status == 429:
        return Retryable(code, message, parse_retry_after(headers), http_status=status)
    if status == 408 or status >= 500:
        return Retryable(
            code,
            message,
            parse_retry_after(headers),
            maybe_accepted=is_post and status in MAYBE_ACCEPTED_5XX,
            http_status=status,
        )
    return Rejected(code, message, status, text.lstrip() or None)


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
    fields = _error_fields(text)
    message = fields.get("message") or fields.get("msg")
    if message:
        return str(message)[:1000]
    stripped = text.strip()
    return stripped[:300] if stripped and not stripped.startswith("{") else None


def _error_code(text: str) -> str | None:
    fields = _error_fields(text)
    code = fields.get("code") or fields.get("type")
    return str(code)[:64] if code else None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), if present and sane."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _expires_at(body: dict[str, Any]) -> datetime | None:
    value = body.get("expires_at")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    return None
