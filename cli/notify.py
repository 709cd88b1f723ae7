"""``run --notify URL``: POST a JSON summary of the finished batch, for cron jobs and chat hooks.

A failed notification is reported on stderr and never changes the exit code: the batch's outcome
is what cron acts on. All attempts together get one deadline, so a receiver that answers a byte at
a time (each read within its timeout) cannot hold up the exit either.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

import click
import httpx
import orjson

if TYPE_CHECKING:
    from chatbatch.reporting.summary import BatchSummary

NOTIFY_TIMEOUT_SECONDS = 10.0
NOTIFY_ATTEMPTS = 3
NOTIFY_DEADLINE_SECONDS = 30.0  # for all attempts together

log = logging.getLogger(__name__)


def notification(summary: BatchSummary, *, exit_code: int, output: str | None) -> dict[str, Any]:
    """The JSON body sent: the batch's status object plus how the run ended."""
    return {
        "event": "batch.finished",
        "exit_code": exit_code,
        "output": output,
        **summary,
    }


def redacted(url: str) -> str:
    """``url`` without credentials, query or fragment (webhook URLs often carry a token)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the --notify URL"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def send(url: str, body: dict[str, Any], *, deadline: float = NOTIFY_DEADLINE_SECONDS) -> bool:
    """POST ``body`` to ``url``, retrying network errors and 5xx answers a few times within
    ``deadline`` seconds in all; whether the receiver accepted it (2xx). Never raises: any
    failure is a warning on stderr, so the exit code stays the batch's."""
    outcome: list[str | None] = []
    worker = threading.Thread(
        target=lambda: outcome.append(_problem_posting(url, body)), name="notify", daemon=True
    )
    worker.start()
    worker.join(deadline)  # a daemon thread still stuck in a read does not keep the process up
    if worker.is_alive() or not outcome:
        problem: str | None = f"no answer within {deadline:g} s, gave up"
    else:
        problem = outcome[0]
    if problem is None:
        return True
    click.echo(f"warning: could not notify {redacted(url)}: {problem}", err=True)
    return False


def _problem_posting(url: str, body: dict[str, Any]) -> str | None:
    """What went wrong posting ``body`` (None when accepted): any exception becomes its type's
    name, never a traceback from the thread nor a message that could repeat the URL's token."""
    try:
        return _post_with_retries(url, orjson.dumps(body))
    except Exception as exc:  # a notification must never fail the run
        return type(exc).__name__


def _post_with_retries(url: str, payload: bytes) -> str | None:
    """POST ``payload``, again after a network error or a 5xx; the last problem, None on 2xx."""
    headers = {"content-type": "application/json", "user-agent": "chatbatch"}
    problem = "not sent"
    with httpx.Client(timeout=NOTIFY_TIMEOUT_SECONDS) as client:
        for _ in range(NOTIFY_ATTEMPTS):
            try:
                answer = client.post(url, content=payload, headers=headers)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
                continue
            if answer.is_success:
                return None
            problem = f"HTTP {answer.status_code}"
            if answer.status_code < 500:
                break
    return problem


def validate_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """click callback: only http(s) URLs with a host and, if given, a port from 1 to 65535."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter("must be an http:// or https:// URL", ctx=ctx, param=param)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port is not None and not 1 <= port <= 65535:
        raise click.BadParameter(
            f"the port must be a number from 1 to 65535, not {_port_text(parts)}",
            ctx=ctx,
            param=param,
        )
    return value


def _port_text(parts: SplitResult) -> str:
    """The port as written in the URL, for the error message (never the credentials)."""
    host_port = parts.netloc.rpartition("@")[2]
    if host_port.startswith("["):
        return host_port.partition("]")[2].removeprefix(":")
    return host_port.partition(":")[2]
