"""``chatbatch export``: a batch's results to JSONL or CSV, in input order."""

from __future__ import annotations

from pathlib import Path

import click

from cli.context import handles_errors, ready_database, setup_logging


@click.command("export")
@click.argument("batch")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    help="Output format (default: from the file extension, else jsonl).",
)
@handles_errors
def export_command(batch: str, output: Path, fmt: str | None) -> None:
    """Write one line (or CSV row) per request, in input order."""
    from chatbatch import queries
    from cli.exporting import export_to

    setup_logging()
    with ready_database().connect() as conn:
        batch_id = queries.resolve_batch(conn, batch).id
    count = export_to(batch_id, output, fmt)
    click.echo(f"wrote {count} result(s) to {output}", err=True)
