"""The live bar of ``run`` and ``process``: finished requests, counts by state and the cost so
far, on the stderr console that log lines share (so a log line never breaks the bar)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy import Connection

from chatbatch.reporting.summary import cost_summary
from chatbatch.rules.states import ACTIVE_STATUSES, ANSWERED_STATUSES, TERMINAL_STATUSES
from chatbatch.store import reads
from chatbatch.store.db import get_engine
from cli.prices import prices_for_batch

PROGRESS_EVERY_SECONDS = 0.3
BAR_WIDTH = 20  # with the counts and the cost the line stays inside 80 columns
COST_EVERY_SECONDS = 2.0  # summing usage reads every finished row of the batch


def progress_bar(console: Console) -> Progress:
    """The live bar: bar, percentage, elapsed time, counts, cost so far (80 columns wide at
    most, a million requests included)."""
    return Progress(
        BarColumn(bar_width=BAR_WIDTH),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[counts]}"),
        TextColumn("{task.fields[cost]}"),
        console=console,
        transient=False,
    )


class ProgressView:
    """A live bar of finished requests with counts by state, refreshed a few times a second, and
    the cost so far and projected total every few seconds when a price table is known."""

    def __init__(self, progress: Progress, batch_id: str, total: int) -> None:
        self._progress = progress
        self._batch_id = batch_id
        self._task = progress.add_task("requests", total=total, counts="", cost="")
        self._last = 0.0
        self._last_cost = 0.0

    def __call__(self, force: bool = False) -> None:
        """Refresh the bar: counts at most every PROGRESS_EVERY_SECONDS, the cost (which sums
        usage) at most every COST_EVERY_SECONDS; ``force`` refreshes both now."""
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_EVERY_SECONDS:
            return
        self._last = now
        with get_engine().connect() as conn:
            counts = reads.status_counts(conn, self._batch_id)
            if force or now - self._last_cost >= COST_EVERY_SECONDS:
                self._last_cost = now
                self._progress.update(self._task, cost=_cost_text(conn, self._batch_id))
        done = sum(counts[s] for s in TERMINAL_STATUSES)
        self._progress.update(self._task, completed=done, counts=counts_text(counts))


def counts_text(counts: dict[str, int]) -> str:
    """``ok 980 · failed 3 · open 17``: short enough for the bar to fit 80 columns."""
    groups = {
        "ok": sum(counts[s] for s in ANSWERED_STATUSES),
        "failed": sum(counts[s] for s in TERMINAL_STATUSES if s not in ANSWERED_STATUSES),
        "open": sum(counts[s] for s in ACTIVE_STATUSES),
    }
    return " · ".join(f"{name} {count}" for name, count in groups.items() if count)


def _cost_text(conn: Connection, batch_id: str) -> str:
    """``0.123456 USD`` so far (the projection is in the summary), or nothing without a price
    table."""
    row = reads.resolve_batch(conn, batch_id)
    prices = prices_for_batch(row)
    if prices is None:
        return ""
    cost = cost_summary(conn, row, prices=prices)
    if cost["so_far"] is None:
        return "cost unknown"
    return f"{_short_money(cost['so_far'])} {cost['currency']}"


def _short_money(amount: str) -> str:
    """Money text cut to six decimals for the bar (exact figures are in the summary)."""
    whole, _, cents = amount.partition(".")
    return f"{whole}.{cents[:6]}" if cents else whole
