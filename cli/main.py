"""The ``chatbatch`` command: parse, call one function, render."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson

from chatbatch.rules.states import TERMINAL_STATUSES, RequestStatus
from cli.config_cmd import config_command
from cli.context import (
    database_engine,
    handles_errors,
    ready_database,
    settings,
    setup_logging,
    summarise,
)
from cli.delete_cmd import delete_command
from cli.export_cmd import export_command
from cli.list_cmd import list_command
from cli.load_cmd import load_command
from cli.render import print_summary
from cli.report_cmd import report_command
from cli.run import process_command, run_command
from cli.show_cmd import show_command
from cli.usage_cmd import prices_for_batch, prices_option, usage_command
from cli.watch_cmd import watch_command
from cli.worker_cmd import worker_command
from simulator.cli import simulate

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from chatbatch.operations.controls import CommandResult


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    package_name="chatbatch", prog_name="chatbatch", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Batch LLM chat completions through a provider's background mode, kept in PostgreSQL."""


@cli.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@handles_errors
def db_upgrade() -> None:
    """Create or upgrade the schema to the newest version (works from any directory)."""
    from chatbatch.store.migrate import upgrade

    setup_logging()
    upgrade(database_engine())
    click.echo("database is up to date")


@cli.command()
@click.argument("batch")
@click.option("--json", "as_json", is_flag=True, help="Print the status object as JSON.")
@prices_option
@handles_errors
def status(batch: str, as_json: bool, prices_path: Path | None) -> None:
    """Progress, usage and problems of a batch (by id or name); with a price table (given here or
    stored by `load --prices`), the cost so far and a projected total."""
    from chatbatch.reporting.summary import cost_summary
    from chatbatch.store import reads

    setup_logging()
    with ready_database().connect() as conn:
        row = reads.resolve_batch(conn, batch)
        summary = summarise(conn, row)
        prices = prices_for_batch(row, prices_path)
        if prices is not None:
            summary["cost"] = cost_summary(conn, row, prices=prices)
    if as_json:
        click.echo(orjson.dumps(summary))
    else:
        print_summary(summary)


@cli.command()
@click.argument("batch")
@click.option(
    "--max-cost",
    type=click.FloatRange(min=0, min_open=True),
    help="Set a new cost limit (in the batch's price-table currency). Without it, a batch "
    "paused by its cost limit resumes with no limit.",
)
@click.option("--json", "as_json", is_flag=True, help="Print {name, status, changed, message}.")
@handles_errors
def resume(batch: str, max_cost: float | None, as_json: bool) -> None:
    """Continue a paused batch (e.g. once the provider accepts the API key again, or to spend
    past a cost limit)."""
    from decimal import Decimal

    from chatbatch.operations import controls

    cap = None if max_cost is None else Decimal(str(max_cost))
    _control(lambda conn, _now: controls.resume(conn, batch, max_cost=cap), as_json)


@cli.command()
@click.argument("batch")
@click.option(
    "--discard",
    is_flag=True,
    help="Also stop fetching requests already submitted (their results are paid for but lost).",
)
@click.option("--json", "as_json", is_flag=True, help="Print {name, status, changed, message}.")
@handles_errors
def cancel(batch: str, discard: bool, as_json: bool) -> None:
    """Stop submitting a batch's requests. Requests already submitted are still fetched (you pay
    for them) unless --discard; the rest become cancelled. Safe to run twice."""
    from chatbatch.operations import controls

    _control(lambda conn, now: controls.cancel(conn, batch, now=now, discard=discard), as_json)


@cli.command()
@click.argument("batch")
@click.option(
    "--status",
    "statuses",
    default="failed,expired",
    show_default=True,
    help="Comma-separated states to requeue: failed, expired, cancelled, succeeded.",
)
@click.option("--json", "as_json", is_flag=True, help="Print {name, status, changed, message}.")
@handles_errors
def retry(batch: str, statuses: str, as_json: bool) -> None:
    """Requeue a batch's failed or expired requests for a new attempt (same custom_id). Exports
    then show each request's latest outcome; usage keeps counting the earlier ones."""
    from chatbatch.operations import controls

    chosen = _parse_statuses(statuses)
    _control(lambda conn, now: controls.retry(conn, batch, now=now, statuses=chosen), as_json)


def _parse_statuses(text: str) -> list[RequestStatus]:
    allowed = {s.value: s for s in TERMINAL_STATUSES}
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    bad = [name for name in names if name not in allowed]
    if bad or not names:
        raise click.BadParameter(
            f"{', '.join(bad) or 'nothing given'}; choose from {', '.join(allowed)}",
            param_hint="--status",
        )
    return [allowed[name] for name in names]


def _control(command: Callable[[Connection, datetime], CommandResult], as_json: bool) -> None:
    """Run one operator command in a transaction and report what it did."""
    from chatbatch.store.db import db_now

    setup_logging()
    with ready_database().begin() as conn:
        result = command(conn, db_now(conn))
    if as_json:
        click.echo(orjson.dumps(dataclasses.asdict(result)))
    else:
        click.echo(f"{result.name}: {result.message}")
    if result.changed and result.status in ("running", "cancelling") and not settings().broker_url:
        click.echo(
            f"no broker is configured: `chatbatch process {result.name}` works it in this shell",
            err=True,
        )


cli.add_command(config_command)
cli.add_command(config_command, name="info")
cli.add_command(load_command)
cli.add_command(export_command)
cli.add_command(run_command)
cli.add_command(process_command)
cli.add_command(worker_command)
cli.add_command(simulate)
cli.add_command(usage_command)
cli.add_command(report_command)
cli.add_command(watch_command)
cli.add_command(list_command)
cli.add_command(show_command)
cli.add_command(delete_command)


def main() -> None:
    """Console-script entry point."""
    logging.captureWarnings(True)
    cli(prog_name="chatbatch")
