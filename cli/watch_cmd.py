"""``chatbatch watch``: a live view of one batch until it finishes (or Ctrl-C): counts by state,
throughput, ETA, cost so far and the latest errors. A plain line per refresh when not on a TTY."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from chatbatch.watching import (
    FINISHED_BATCH_STATUSES,
    ErrorLine,
    Snapshot,
    ThroughputWindow,
    eta_seconds,
    format_duration,
    format_rate,
    plain_line,
)
from cli.context import handles_errors, ready_database, setup_logging
from cli.usage_cmd import prices_for_batch, prices_option

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from chatbatch.pricing import PriceTable

COST_EVERY_SECONDS = 5.0  # cost sums every answer's usage: a heavier query than the counts
MESSAGE_WIDTH = 90
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
@handles_errors
def watch_command(batch: str, interval: float, prices_path: Path | None) -> None:
    """Follow BATCH (id or name) live until it is completed or cancelled: counts by state,
    throughput over the last 10 s, ETA, cost so far (with a price table, given or stored with
    the batch) and the latest errors by reason. Ctrl-C stops watching, not the batch."""
    setup_logging()
    engine = ready_database()
    with engine.connect() as conn:
        from chatbatch import queries

        row = queries.resolve_batch(conn, batch)
    watcher = _Watcher(engine, row.id, prices_for_batch(row, prices_path))
    console = Console()
    try:
        if console.is_terminal:
            _watch_live(watcher, console, interval)
        else:
            _watch_plain(watcher, interval)
    except KeyboardInterrupt:
        click.echo("stopped watching; the batch carries on")


class _Watcher:
    """Reads a snapshot of the batch per refresh and keeps the throughput window."""

    def __init__(self, engine: Engine, batch_id: str, prices: PriceTable | None) -> None:
        self.engine = engine
        self.batch_id = batch_id
        self.prices = prices
        self.window = ThroughputWindow()
        self._cost: str | None = None
        self._cost_at = -COST_EVERY_SECONDS

    def snapshot(self) -> Snapshot:
        from chatbatch import queries
        from chatbatch.report_data import recent_errors, state_counts

        now = time.monotonic()
        with self.engine.connect() as conn:
            row = queries.resolve_batch(conn, self.batch_id)
            counts = state_counts(conn, row.id)
            errors = [
                ErrorLine(e.code, e.count, e.last_message) for e in recent_errors(conn, row.id)
            ]
            finished = row.status in FINISHED_BATCH_STATUSES
            if self.prices is not None and (finished or now - self._cost_at >= COST_EVERY_SECONDS):
                self._cost, self._cost_at = self._cost_text(conn, row), now
        snap = Snapshot(
            row.name, row.status, row.total, counts, row.pause_reason, self._cost, errors
        )
        self.window.add(now, snap.finished)
        return snap

    def _cost_text(self, conn: Any, row: Any) -> str:
        from chatbatch.summary import cost_summary

        assert self.prices is not None
        cost = cost_summary(conn, row, prices=self.prices)
        currency = cost["currency"]
        if cost["so_far"] is None:
            return "unknown (no price for " + ", ".join(sorted(cost["unpriced_models"])) + ")"
        text = f"{cost['so_far']} {currency}"
        if cost["projected_total"] not in (None, cost["so_far"]):
            text += f" (projected {cost['projected_total']} {currency})"
        return text


def _watch_plain(watcher: _Watcher, interval: float) -> None:
    while True:
        snap = watcher.snapshot()
        click.echo(plain_line(snap, watcher.window.rate()))
        if snap.done:
            return
        time.sleep(interval)


def _watch_live(watcher: _Watcher, console: Console, interval: float) -> None:
    from rich.live import Live

    snap = watcher.snapshot()
    with Live(_view(snap, None), console=console, auto_refresh=False) as live:
        while not snap.done:
            time.sleep(interval)
            snap = watcher.snapshot()
            live.update(_view(snap, watcher.window.rate()), refresh=True)


def _view(snap: Snapshot, rate: float | None) -> Group:
    """The live panel: a header, a bar, counts, throughput and ETA, cost, errors."""
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
    return Group(*parts)


def _status_style(status: str) -> str:
    return {"completed": "green", "paused": "yellow", "cancelling": "yellow"}.get(status, "cyan")
