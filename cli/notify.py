"""``run --notify URL``: POST a JSON summary of the finished batch, for cron jobs and chat hooks.

A failed notification is reported on stderr and never changes the exit code: the batch's outcome
is what cron acts on. All attempts together get one deadline, so a receiver that answers a byte at
a time (each read within its timeout) cannot hold up the exit either.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, urlsplit

import click

from worker.webhooks import post_json, redacted


def send(url: str, body: dict[str, Any]) -> bool:
    """POST ``body`` to ``url`` (``worker.webhooks``: a few attempts within one deadline);
    whether the receiver accepted it. Never raises: any failure is a warning on stderr, so the
    exit code stays the batch's."""
    problem = post_json(url, body)
    if problem is None:
        return True
    click.echo(f"warning: could not notify {redacted(url)}: {problem}", err=True)
    return False


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
