"""``chatbatch report``: a batch's counts, timeline, latency, errors, usage and cost as one HTML
file that opens in any browser, offline."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import click

from cli.context import handles_errors, ready_database, setup_logging
from cli.prices import prices_for_batch, prices_option


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
@handles_errors
def report_command(batch: str, output: Path, prices_path: Path | None) -> None:
    """Write an HTML report of BATCH (id or name): counts by state, completions over time,
    latency percentiles, errors by code with examples, usage and cost by model, schema pass
    rate. One self-contained file; the price table defaults to the one stored with the batch."""
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
    write_atomically(output, render_report(data))
    click.echo(f"wrote the report of {row.name} to {output}")


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` and rename it into place: a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; a report is for sharing
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
