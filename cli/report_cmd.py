"""``chatbatch report``: a batch's counts, timeline, latency, errors, usage and cost as one HTML
file that opens in any browser, offline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli.context import handles_errors, ready_database, setup_logging
from cli.files import write_atomically
from cli.prices import prices_for_batch, prices_option
from cli.providers import providers_option

if TYPE_CHECKING:
    from sqlalchemy import Connection


@click.command("report")
@click.argument("batch")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The HTML file to write (replaced atomically).",
)
@prices_option
@providers_option
@click.option(
    "--compare",
    "other",
    metavar="BATCH",
    help="Add a comparison with another batch of the same rows (as `chatbatch compare`).",
)
@handles_errors
def report_command(batch: str, output: Path, prices_path: Path | None, other: str | None) -> None:
    """Write an HTML report of BATCH (id or name): counts by state, completions over time,
    latency percentiles, errors by code with examples, usage and cost by model, schema pass
    rate, agreement with gold labels. One self-contained file; the price table defaults to the
    one stored with the batch."""
    from chatbatch.reporting.report import render_report
    from chatbatch.reporting.report_data import collect
    from chatbatch.store import reads
    from chatbatch.store.db import db_now
    from chatbatch.store.dialect import read_snapshot

    setup_logging()
    engine = ready_database()
    with engine.connect() as conn, read_snapshot(conn):  # every figure from one snapshot
        row = reads.resolve_batch(conn, batch)
        prices = prices_for_batch(row, prices_path)
        data = collect(conn, row, prices=prices, now=db_now(conn))
        comparison = None if other is None else _comparison(conn, row, other)
    write_atomically(output, render_report(data, comparison))
    click.echo(f"wrote the report of {row.name} to {output}")


def _comparison(conn: Connection, batch: Any, other: str) -> dict[str, Any]:
    """``--compare``: the batch against ``other``, as ``chatbatch compare --json`` prints it."""
    from chatbatch.reporting.compare import compare_batches
    from chatbatch.store import reads
    from cli.compare_cmd import cost_text

    second = reads.resolve_batch(conn, other)
    both = compare_batches(
        conn, batch, second, field=None, key=None, cost_of=lambda row: cost_text(conn, row)
    )
    return both.report
