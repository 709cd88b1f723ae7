"""``chatbatch workers``: the worker processes live or heard from lately, and what each holds."""

from __future__ import annotations

from datetime import datetime, timedelta

import click
import orjson

from chatbatch.store.db import db_now
from chatbatch.store.liveness import WorkerRow
from chatbatch.untrusted import printable
from cli.context import handles_errors, ready_database, settings, setup_logging
from cli.list_cmd import table_lines

HEADER = ("STATE", "HOST", "PID", "KIND", "STARTED", "LAST BEAT", "IN FLIGHT", "ID")


@click.command("workers")
@click.option(
    "--since",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    metavar="HOURS",
    help="Also list workers stopped or lost within this many hours.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of worker objects.")
@handles_errors
def workers_command(since: float, as_json: bool) -> None:
    """The workers (``chatbatch worker``, ``run``, ``process``) live now or heard from within
    --since hours: state (live, lost: it missed three heartbeats, stopped), host, pid, when it
    started and last beat, and how many requests it holds in flight."""
    from chatbatch.store import liveness

    setup_logging()
    config = settings()
    with ready_database().connect() as conn:
        now = db_now(conn)
        rows = liveness.list_workers(
            conn,
            now=now,
            heartbeat_seconds=config.heartbeat_seconds,
            since=now - timedelta(hours=since),
        )
    if as_json:
        click.echo(orjson.dumps([row.as_json() for row in rows]))
        return
    if not rows:
        click.echo(f"no worker heard from in the last {since:g} hour(s)", err=True)
        return
    for line in table_lines([_cells(row, now) for row in rows], header=HEADER):
        click.echo(line)


def _cells(row: WorkerRow, now: datetime) -> tuple[str, ...]:
    return (
        row.state,
        printable(row.host),
        str(row.pid),
        row.kind,
        row.started_at.strftime("%Y-%m-%d %H:%M:%S"),
        f"{(now - row.beat_at).total_seconds():.0f} s ago",
        str(row.in_flight),
        row.id,
    )
