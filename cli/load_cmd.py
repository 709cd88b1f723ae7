"""``chatbatch load``: a JSONL file of requests (or, with a template, records) into a batch."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from cli.context import handles_errors, ready_database, settings, setup_logging


@click.command("load")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", help="A unique name for the batch (default: file name + short id).")
@click.option("--model", help="Model for lines that do not name one.")
@click.option("--json", "as_json", is_flag=True, help="Print {id, name, total} as JSON.")
@handles_errors
def load_command(file: Path, name: str | None, model: str | None, as_json: bool) -> None:
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
