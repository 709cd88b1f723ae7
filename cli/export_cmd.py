"""``chatbatch export``: a batch's results to JSONL or CSV, in input order."""

from __future__ import annotations

import csv
from pathlib import Path

import click

from cli.context import handles_errors, ready_database, setup_logging


@click.command("export")
@click.argument("batch")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="The file to write (atomically), or - for standard output.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    help="Output format (default: from the file extension, else jsonl; jsonl for -).",
)
@click.option(
    "--status",
    "statuses",
    metavar="S,S",
    help="Only requests in these states (comma-separated): "
    "queued, submitting, submitted, succeeded, failed, expired, cancelled, reused.",
)
@click.option(
    "--columns",
    metavar="A,B,C",
    help="CSV only: these columns, in this order (record columns, answer fields, output "
    "columns; a name holding a comma goes in double quotes).",
)
@click.option("--bom", is_flag=True, help="CSV only: start with a UTF-8 byte-order mark (Excel).")
@handles_errors
def export_command(
    batch: str,
    output: Path,
    fmt: str | None,
    statuses: str | None,
    columns: str | None,
    bom: bool,
) -> None:
    """Write one line (or CSV row) per request, in input order.

    A CSV of a CSV or record file starts with its columns; with a JSON schema, the answer's
    top-level fields follow (answer.NAME when the name is taken), then schema_valid,
    schema_error and the output columns. Requests not finished yet are exported as unfinished
    (with a warning). Everything but the export itself goes to stderr."""
    from chatbatch.reporting.export import parse_statuses
    from chatbatch.store import reads
    from cli.exporting import check_output, export_to, shown_output, unfinished_note

    setup_logging()
    check_output(output)  # before anything else is done
    chosen_statuses = parse_statuses(statuses) if statuses is not None else None
    chosen = parse_columns(columns) if columns is not None else None
    with ready_database().connect() as conn:
        row = reads.resolve_batch(conn, batch)
        note = unfinished_note(conn, row, chosen_statuses)
    if note:
        click.echo(f"warning: {note}", err=True)
    count = export_to(row.id, output, fmt, columns=chosen, bom=bom, statuses=chosen_statuses)
    click.echo(f"wrote {count} result(s) to {shown_output(output)}", err=True)


def parse_columns(text: str) -> list[str]:
    """``a, b,"c,d"`` → ``["a", "b", "c,d"]``: CSV syntax, spaces around names ignored."""
    row = next(csv.reader([text], skipinitialspace=True), [])
    return [name.strip() for name in row if name.strip()]
