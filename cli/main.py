"""The ``chatbatch`` command: parse, call one function, render."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import orjson

from cli.context import handles_errors, ready_database, settings, setup_logging
from cli.render import print_summary
from cli.run import run_command
from cli.worker_cmd import worker_command
from simulator.cli import simulate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Batch LLM chat completions through a provider's background mode, kept in PostgreSQL."""


@cli.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@handles_errors
def db_upgrade() -> None:
    """Create or upgrade the schema to the newest version (works from any directory)."""
    from chatbatch.db import get_engine
    from chatbatch.migrate import upgrade

    setup_logging()
    upgrade(get_engine())
    click.echo("database is up to date")


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", help="A unique name for the batch (default: file name + short id).")
@click.option("--model", help="Model for lines that do not name one.")
@click.option("--json", "as_json", is_flag=True, help="Print {id, name, total} as JSON.")
@handles_errors
def load(file: Path, name: str | None, model: str | None, as_json: bool) -> None:
    """Load a JSONL file of chat requests as a new batch (all lines or none)."""
    from chatbatch.loading import load_jsonl

    setup_logging()
    engine = ready_database()
    with engine.begin() as conn:
        batch = load_jsonl(
            conn, file, name=name, default_model=model, max_line_bytes=settings().max_line_bytes
        )
    if as_json:
        click.echo(orjson.dumps({"id": batch.id, "name": batch.name, "total": batch.total}))
    else:
        click.echo(batch.id)


@cli.command()
@click.argument("batch")
@click.option("--json", "as_json", is_flag=True, help="Print the status object as JSON.")
@handles_errors
def status(batch: str, as_json: bool) -> None:
    """Progress, usage and problems of a batch (by id or name)."""
    from chatbatch import queries
    from chatbatch.summary import batch_summary

    setup_logging()
    with ready_database().connect() as conn:
        summary = batch_summary(conn, queries.resolve_batch(conn, batch))
    if as_json:
        click.echo(orjson.dumps(summary))
    else:
        print_summary(summary)


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of status objects.")
@handles_errors
def list_(as_json: bool) -> None:
    """All batches, newest first."""
    from chatbatch import queries
    from chatbatch.summary import batch_summary

    setup_logging()
    with ready_database().connect() as conn:
        summaries = [batch_summary(conn, row) for row in queries.list_batches(conn)]
    if as_json:
        click.echo(orjson.dumps(summaries))
        return
    for s in summaries:
        done = s["counts"]["succeeded"] + s["counts"]["failed"] + s["counts"]["expired"]
        click.echo(f"{s['id']}  {s['name']:<32}  {s['status']:<10} {done}/{s['total']}")


@cli.command()
@click.argument("batch")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    help="Output format (default: from the file extension, else jsonl).",
)
@handles_errors
def export(batch: str, output: Path, fmt: str | None) -> None:
    """Write one line (or CSV row) per request, in input order."""
    from chatbatch import queries
    from cli.exporting import export_to

    setup_logging()
    with ready_database().connect() as conn:
        batch_id = queries.resolve_batch(conn, batch).id
    count = export_to(batch_id, output, fmt)
    click.echo(f"wrote {count} result(s) to {output}", err=True)


@cli.command()
@click.argument("batch")
@handles_errors
def resume(batch: str) -> None:
    """Continue a batch that was paused (e.g. after the provider refused the API key)."""
    from chatbatch import queries
    from chatbatch.states import BatchStatus

    setup_logging()
    with ready_database().begin() as conn:
        row = queries.resolve_batch(conn, batch)
        changed = queries.set_batch_status(
            conn, row.id, BatchStatus.RUNNING, from_statuses=[BatchStatus.PAUSED]
        )
    click.echo(f"{row.name}: {'resumed' if changed else f'not paused ({row.status})'}")


cli.add_command(run_command)
cli.add_command(worker_command)
cli.add_command(simulate)


def main() -> None:
    """Console-script entry point."""
    logging.captureWarnings(True)
    cli(prog_name="chatbatch")
