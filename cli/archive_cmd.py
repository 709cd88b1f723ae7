"""``chatbatch archive`` and ``unarchive``: move finished batches' requests out of the hot table
and back (``chatbatch.operations.archive``), one transaction per batch."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING

import click
import orjson

from cli.context import handles_errors, ready_database, setup_logging

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from chatbatch.operations.controls import CommandResult


@click.command("archive")
@click.argument("batches", nargs=-1)
@click.option(
    "--older-than",
    "age",
    metavar="AGE",
    help="Archive every completed or cancelled batch that finished longer ago than AGE: "
    "7d, 12h, 30m, 1d12h.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print a list of {name, status, changed, message}."
)
@handles_errors
def archive_command(batches: tuple[str, ...], age: str | None, as_json: bool) -> None:
    """Move finished BATCHES' requests (ids or names) out of the table workers claim from, so
    it stays small however many batches a fleet has run. Export, report, status, show and usage
    read an archived batch as before; retry, resume and cancel refuse it until `chatbatch
    unarchive`. Safe to run twice, e.g. nightly with --older-than."""
    if not batches and age is None:
        raise click.UsageError("name the batches to archive, or give --older-than AGE")
    older_than = None if age is None else _age(age)
    setup_logging()
    engine = ready_database()
    chosen = list(batches) + ([] if older_than is None else _finished_before(engine, older_than))
    results = []
    for ref in dict.fromkeys(chosen):  # each line as soon as its batch is archived
        results.append(result := _archive_one(engine, ref))
        if not as_json:
            click.echo(f"{result.name}: {result.message}")
    if as_json:
        click.echo(orjson.dumps([dataclasses.asdict(result) for result in results]))
    elif not results:
        click.echo(f"nothing to archive: no batch finished more than {age} ago")


@click.command("unarchive")
@click.argument("batch")
@click.option("--json", "as_json", is_flag=True, help="Print {name, status, changed, message}.")
@handles_errors
def unarchive_command(batch: str, as_json: bool) -> None:
    """Move an archived BATCH's requests back to the working table, so it can be retried."""
    from chatbatch.operations import archive
    from cli.control_cmd import run_control

    run_control(lambda conn, _now: archive.unarchive(conn, batch), as_json)


def _age(text: str) -> timedelta:
    """``--older-than``'s AGE; a usage error when it is not one."""
    from chatbatch.rules.ratelimits import parse_duration

    seconds = parse_duration(text)
    if seconds is None:
        raise click.BadParameter(
            f"{text!r} is not an age such as 7d, 12h or 30m", param_hint="--older-than"
        )
    return timedelta(seconds=seconds)


def _finished_before(engine: Engine, older_than: timedelta) -> list[str]:
    """The ids of the batches ``--older-than`` takes, by the database's clock."""
    from chatbatch.operations import archive
    from chatbatch.store.db import db_now

    with engine.connect() as conn:
        return archive.archivable_before(conn, db_now(conn) - older_than)


def _archive_one(engine: Engine, ref: str) -> CommandResult:
    """Archive one batch in a transaction of its own, so each one archived stays archived."""
    from chatbatch.operations import archive
    from chatbatch.store.db import db_now

    with engine.begin() as conn:
        return archive.archive(conn, ref, now=db_now(conn))
