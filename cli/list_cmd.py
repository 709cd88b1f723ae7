"""``chatbatch list``: the batches, newest first, with progress and cost."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import orjson

from chatbatch.rules.states import TERMINAL_STATUSES
from chatbatch.store.db import masked_url
from chatbatch.untrusted import printable
from cli.context import handles_errors, ready_database, setup_logging
from cli.prices import priced_summary

if TYPE_CHECKING:
    from chatbatch.reporting.summary import BatchSummary, CostSummary

DEFAULT_LIMIT = 20
HEADER = ("NAME", "STATUS", "PROGRESS", "COST", "CREATED", "ID")


@click.command("list")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Show at most this many batches (0: all).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of status objects.")
@handles_errors
def list_command(limit: int, as_json: bool) -> None:
    """The batches, newest first: name, status, progress, cost so far (with the price table
    stored at load time), when each was created, and its id."""
    from chatbatch.store import reads

    setup_logging()
    engine = ready_database()
    with engine.connect() as conn:
        rows = reads.list_batches(conn)
        shown = rows[:limit] if limit else rows
        summaries = []
        for row in shown:
            summaries.append(priced_summary(conn, row))
    if as_json:
        click.echo(orjson.dumps(summaries))
        return
    if not summaries:
        click.echo(f"no batches in {masked_url(engine.url)}", err=True)
    for line in table_lines([_cells(s) for s in summaries]):
        click.echo(line)
    if len(rows) > len(shown):
        click.echo(f"… and {len(rows) - len(shown)} older batch(es): --limit 0 shows all", err=True)


def _cells(summary: BatchSummary) -> tuple[str, ...]:
    """One row of the table: name, status, progress, cost, when created, id (names printable)."""
    done = sum(summary["counts"][k] for k in TERMINAL_STATUSES)
    total = summary["total"]
    share = f" {done / total:.0%}" if total else ""
    return (
        printable(summary["name"]),
        summary["status"] + (", archived" if summary["archived_at"] else ""),
        f"{done}/{total}{share}",
        _cost_text(summary.get("cost")),
        summary["created_at"][:16].replace("T", " "),
        summary["id"],
    )


def _cost_text(cost: CostSummary | None) -> str:
    """The cost so far with its currency, ``unknown`` when a model has no price, ``-`` unpriced."""
    if cost is None:
        return "-"
    if cost["so_far"] is None:
        return "unknown"
    return f"{cost['so_far']} {cost['currency']}"


def table_lines(rows: list[tuple[str, ...]], *, header: tuple[str, ...] = HEADER) -> list[str]:
    """The header and ``rows`` in columns as wide as their widest cell (nothing when there are
    no rows)."""
    if not rows:
        return []
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
