"""``chatbatch delete BATCH``: remove a finished batch and everything stored about it."""

from __future__ import annotations

import dataclasses
import sys

import click
import orjson

from chatbatch.errors import ConfigError
from cli.context import handles_errors, ready_database, setup_logging


@click.command("delete")
@click.argument("batch")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print {name, status, changed, message}.")
@handles_errors
def delete_command(batch: str, yes: bool, as_json: bool) -> None:
    """Delete BATCH (id or name) with its requests, answers and history. A batch that is still
    running, or has requests in flight, is refused: cancel it first."""
    from chatbatch.operations import controls
    from chatbatch.store import reads

    setup_logging()
    engine = ready_database()
    if not yes:
        with engine.connect() as conn:
            row = reads.resolve_batch(conn, batch)
        _confirm(f"Delete batch {row.name} ({row.total} request(s)) and all its answers?")
    with engine.begin() as conn:
        result = controls.delete(conn, batch)
    if as_json:
        click.echo(orjson.dumps(dataclasses.asdict(result)))
    else:
        click.echo(f"{result.name}: {result.message}")


def _confirm(question: str) -> None:
    """Ask on a terminal; without one, refuse (a script must say --yes)."""
    if not sys.stdin.isatty():
        raise ConfigError("not deleting without confirmation: add --yes")
    click.confirm(question, abort=True)
