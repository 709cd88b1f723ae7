"""``run --notify URL``: POST a JSON summary of the finished batch, for cron jobs and chat hooks.

A failed notification is reported on stderr and never changes the exit code: the batch's outcome
is what cron acts on.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import click
import httpx
import orjson

NOTIFY_TIMEOUT_SECONDS = 10.0
NOTIFY_ATTEMPTS = 3

log = logging.getLogger(__name__)


def notification(summary: dict[str, Any], *, exit_code: int, output: str | None) -> dict[str, Any]:
    """The JSON body sent: the batch's status object plus how the run ended."""
    return {
        "event": "batch.finished",
        "exit_code": exit_code,
        "output": output,
        **summary,
    }


def redacted(url: str) -> str:
    """``url`` without credentials, query or fragment (webhook URLs often carry a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def send(url: str, body: dict[str, Any]) -> bool:
    """POST ``body`` to ``url``, retrying network errors and 5xx answers a few times; whether
    the receiver accepted it (2xx)."""
    payload = orjson.dumps(body)
    headers = {"content-type": "application/json", "user-agent": "chatbatch"}
    problem = ""
    with httpx.Client(timeout=NOTIFY_TIMEOUT_SECONDS) as client:
        for _ in range(NOTIFY_ATTEMPTS):
            try:
                answer = client.post(url, content=payload, headers=headers)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
                continue
            if answer.is_success:
                return True
            problem = f"HTTP {answer.status_code}"
            if answer.status_code < 500:
                break
    click.echo(f"warning: could not notify {redacted(url)}: {problem}", err=True)
    return False


def validate_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """click callback: only http(s) URLs are accepted."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter("must be an http:// or https:// URL", ctx=ctx, param=param)
    return value
