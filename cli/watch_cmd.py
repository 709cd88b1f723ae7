"""``chatbatch watch``: a live view of one batch until it finishes, is paused (exit code 4) or
Ctrl-C: counts by state, throughput, ETA, cost so far and the latest errors, and a hint when work
is due but nobody moves it. A plain line per refresh when not on a TTY."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from chatbatch.reporting.watching import (
    FINISHED_BATCH_STATUSES,
    STALL_SECONDS,
    ErrorLine,
    Motion,
    Snapshot,
    StallWatch,
    ThroughputWindow,
    eta_seconds,
    format_duration,
    format_rate,
    pause_message,
    plain_line,
    stall_hint,
)
from cli.context import handles_errors, ready_database, settings, setup_logging
from cli.prices import prices_for_batch, prices_option
from cli.providers import providers_option

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Connection, Engine

    from chatbatch.rules.pricing import PriceTable

COST_EVERY_SECONDS = 5.0  # cost sums every answer's usage: a heavier query than the counts
MESSAGE_WIDTH = 90
WORKED = ("running", "cancelling")  # statuses in which someone should be moving due work
STATE_STYLES = {
    "succeeded": "green",
    "reused": "blue",
    "failed": "red",
    "expired": "dark_orange",
    "cancelled": "grey50",
    "submitted": "magenta",
    "submitting": "magenta",
    "queued": "grey70",
}


@click.command("watch")
@click.argument("batch")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@prices_option
@providers_option
@handles_errors
def watch_command(batch: str, interval: float, prices_path: Path | None) -> None:
    """Follow BATCH (id or name) live until it is completed, cancelled or paused: counts by
    state, throughput over the last 10 s, ETA, cost so far (with a price table, given or stored
    with the batch) and the latest errors by reason. When work is due and nothing has moved for
    30 s it says that nobody seems to work the batch and how to start a `chatbatch process` or
    worker. Ctrl-C stops watching, not the batch.

    \b
    Exit codes:
      0  the batch completed or was cancelled, or Ctrl-C stopped watching
      4  the batch is paused (the reason is printed; `chatbatch resume BATCH`)
      2  bad usage or configuration, an unknown batch, no database
      1  another error
    """
    setup_logging()
    engine = ready_database()
    with engine.connect() as conn:
        from chatbatch.store import reads

        row = reads.resolve_batch(conn, batch)
    watcher = _Watcher(engine, row.id, prices_for_batch(row, prices_path), STALL_SECONDS)
    console = Console()
    try:
        if console.is_terminal:
            last = _watch_live(watcher, console, interval)
        else:
            last = _watch_plain(watcher, interval)
    except KeyboardInterrupt:
        click.echo("stopped watching; the batch carries on")
        return
    if last.paused:
        from chatbatch.reporting.summary import EXIT_PAUSED

        click.echo(pause_message(last), err=True)
        sys.exit(EXIT_PAUSED)


class _Watcher:
    """Reads a snapshot of the batch per refresh and keeps the throughput window and whether
    the batch is stalled."""

    def __init__(
        self,
        engine: Engine,
        batch_id: str,
        prices: PriceTable | None,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        self.engine = engine
        self.batch_id = batch_id
        self.prices = prices
        self.window = ThroughputWindow()
        self.stall = StallWatch(stall_seconds)
        self.stalled_for: float | None = None  # as of the latest snapshot
        config = settings()
        self.broker = bool(config.broker_url)
        self.embedded = config.is_embedded and not self.broker
        self._cost: str | None = None
        self._cost_at = -COST_EVERY_SECONDS

    def snapshot(self) -> Snapshot:
        """Read the batch once: counts, latest errors, cost (now and then), whether it moves."""
        from chatbatch.reporting.report_data import recent_errors
        from chatbatch.store import reads

        now = time.monotonic()
        with self.engine.connect() as conn:
            row = reads.resolve_batch(conn, self.batch_id)
            counts, claims = _counts_and_claims(conn, row.id)
            errors = [
                ErrorLine(e.code, e.count, e.last_message) for e in recent_errors(conn, row.id)
            ]
            finished = row.status in FINISHED_BATCH_STATUSES
            if self.prices is not None and (finished or now - self._cost_at >= COST_EVERY_SECONDS):
                self._cost, self._cost_at = self._cost_text(conn, row), now
            next_due = reads.next_due_at(conn, row.id) if row.status in WORKED else None
            self.stalled_for = self._observe(conn, Motion.of(counts, claims), next_due)
        snap = Snapshot(
            row.name, row.status, row.total, counts, row.pause_reason, self._cost, errors
        )
        self.window.add(now, snap.finished)
        return snap

    def _observe(self, conn: Connection, motion: Motion, next_due: datetime | None) -> float | None:
        """Feed the stall rule, on the database's clock (the one leases and due times use)."""
        from chatbatch.store.db import db_now

        return self.stall.observe(db_now(conn), motion, next_due)

    def hint(self, snap: Snapshot) -> str | None:
        """The stalled-batch hint for the latest snapshot, None while the batch moves."""
        if self.stalled_for is None:
            return None
        return stall_hint(snap.name, self.stalled_for, embedded=self.embedded, broker=self.broker)

    def _cost_text(self, conn: Any, row: Any) -> str:
        """The cost so far and the projected total, or which models have no price."""
        from chatbatch.reporting.summary import cost_summary

        assert self.prices is not None
        cost = cost_summary(conn, row, prices=self.prices)
        currency = cost["currency"]
        if cost["so_far"] is None:
            return "unknown (no price for " + ", ".join(sorted(cost["unpriced_models"])) + ")"
        text = f"{cost['so_far']} {currency}"
        if cost["projected_total"] not in (None, cost["so_far"]):
            text += f" (projected {cost['projected_total']} {currency})"
        return text


def _counts_and_claims(conn: Connection, batch_id: str) -> tuple[dict[str, int], int]:
    """Requests per state (every state present) and the sum of their lease tokens, in the one
    scan the counts need: the claims tell a worker busy polling from nobody at all."""
    from sqlalchemy import func, select

    from chatbatch.rules.states import RequestStatus
    from chatbatch.store.models import all_requests_table as r

    counts = {status.value: 0 for status in RequestStatus}
    claims = 0
    query = (
        select(r.c.status, func.count(), func.coalesce(func.sum(r.c.lease_token), 0))
        .where(r.c.batch_id == batch_id)
        .group_by(r.c.status)
    )
    for status, count, tokens in conn.execute(query):
        counts[status] = int(count)
        claims += int(tokens)
    return counts, claims


def _watch_plain(watcher: _Watcher, interval: float) -> Snapshot:
    """A line per refresh, and the stalled hint once each time the batch stalls; returns the
    snapshot that ended it (finished or paused)."""
    hinted = False
    while True:
        snap = watcher.snapshot()
        click.echo(plain_line(snap, watcher.window.rate()))
        if snap.done or snap.paused:
            return snap
        hint = watcher.hint(snap)
        if hint is not None and not hinted:
            click.echo(hint)
        hinted = hint is not None
        time.sleep(interval)


def _watch_live(watcher: _Watcher, console: Console, interval: float) -> Snapshot:
    """The live panel, redrawn per refresh; returns the snapshot that ended it."""
    from rich.live import Live

    snap = watcher.snapshot()
    with Live(_view(snap, None), console=console, auto_refresh=False) as live:
        while not (snap.done or snap.paused):
            time.sleep(interval)
            snap = watcher.snapshot()
            live.update(_view(snap, watcher.window.rate(), watcher.hint(snap)), refresh=True)
    return snap


def _view(snap: Snapshot, rate: float | None, hint: str | None = None) -> Group:
    """The live panel: a header, a bar, counts, throughput and ETA, cost, errors, and the
    stalled hint while nothing moves."""
    header = Text.assemble((snap.name, "bold"), "  ", (snap.status, _status_style(snap.status)))
    if snap.pause_reason:
        header.append(f"  paused: {snap.pause_reason}", style="yellow")
    total = max(snap.total, 1)
    bar = Table.grid(padding=(0, 2))
    bar.add_row(
        ProgressBar(total=total, completed=snap.finished, width=50),
        f"{snap.finished:,}/{snap.total:,} finished ({snap.finished / total:.0%})",
    )
    counts = Table.grid(padding=(0, 3))
    cells = [
        Text.assemble((f"{n:,} ", "bold"), (name, STATE_STYLES.get(name, "")))
        for name, n in snap.counts.items()
        if n
    ]
    counts.add_row(*cells)
    facts = Table.grid(padding=(0, 1))
    facts.add_column(style="grey62")
    facts.add_row("throughput", f"{format_rate(rate)} over the last 10 s")
    if not snap.done:
        facts.add_row("ETA", format_duration(eta_seconds(snap.remaining, rate)))
    if snap.cost is not None:
        facts.add_row("cost", Text(snap.cost))
    parts: list[Any] = [header, bar, counts, facts]
    if snap.errors:
        errors = Table(box=None, pad_edge=False, show_edge=False, title_justify="left")
        errors.add_column("error", style="red")
        errors.add_column("requests", justify="right")
        errors.add_column("latest message", overflow="ellipsis", no_wrap=True)
        for e in snap.errors:
            message = Text((e.last_message or "")[:MESSAGE_WIDTH])  # Text: never read as markup
            errors.add_row(Text(e.code), f"{e.count:,}", message)
        parts.append(errors)
    if hint is not None and not (snap.done or snap.paused):
        parts.append(Text(hint, style="yellow"))  # Text: the batch name is never markup
    return Group(*parts)


def _status_style(status: str) -> str:
    """The colour of a batch status in the header."""
    return {"completed": "green", "paused": "yellow", "cancelling": "yellow"}.get(status, "cyan")
