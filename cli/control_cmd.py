"""``chatbatch resume``, ``cancel`` and ``retry``: the operator commands on a batch, each one
locked transaction (``chatbatch.operations.controls``) and a line saying what it did."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import click
import orjson

from cli.context import handles_errors, ready_database, settings, setup_logging

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from chatbatch.operations.controls import CommandResult
    from chatbatch.operations.retry import RetryChoice


@click.command("resume")
@click.argument("batch")
@click.option(
    "--max-cost",
    type=click.FloatRange(min=0, min_open=True),
    help="Set a new cost limit (in the batch's price-table currency). Without it, a batch "
    "paused by its cost limit resumes with no limit.",
)
@click.option("--json", "as_json", is_flag=True, help="Print {name, status, changed, message}.")
@handles_errors
def resume_command(batch: str, max_cost: float | None, as_json: bool) -> None:
    """Continue a paused batch (e.g. once the provider accepts the API key again, or to spend
    past a cost limit)."""
    from decimal import Decimal

    from chatbatch.operations import controls

    cap = None if max_cost is None else Decimal(str(max_cost))
    run_control(lambda conn, _now: controls.resume(conn, batch, max_cost=cap), as_json)


@click.command("cancel")
@click.argument("batch")
@click.option(
    "--discard",
    is_flag=True,
    help="Also stop fetching requests already submitted (their results are paid for but lost).",
)
@click.option("--json", "as_json", is_flag=True, help="Print {name, status, changed, message}.")
@handles_errors
def cancel_command(batch: str, discard: bool, as_json: bool) -> None:
    """Stop submitting a batch's requests. Requests already submitted are still fetched (you pay
    for them) unless --discard; the rest become cancelled. Safe to run twice."""
    from chatbatch.operations import controls

    run_control(lambda conn, now: controls.cancel(conn, batch, now=now, discard=discard), as_json)


@click.command("retry")
@click.argument("batch")
@click.option(
    "--status",
    "statuses",
    default="failed,expired",
    show_default=True,
    help="Comma-separated, what to requeue: failed, expired, cancelled, succeeded, reused; "
    "invalid (answers that broke the schema); disagree (answers that differ from the gold "
    "label, for batches loaded with --gold-column).",
)
@click.option("--json", "as_json", is_flag=True, help="Print {name, status, changed, message}.")
@handles_errors
def retry_command(batch: str, statuses: str, as_json: bool) -> None:
    """Requeue a batch's failed or expired requests for a new attempt (same custom_id), or the
    ones --status names. Exports then show each request's latest outcome; usage keeps counting
    the earlier ones."""
    from chatbatch.operations.retry import retry

    chosen = _parse_statuses(statuses)
    run_control(
        lambda conn, now: retry(
            conn,
            batch,
            now=now,
            statuses=chosen.statuses,
            invalid=chosen.invalid,
            disagree=chosen.disagree,
        ),
        as_json,
    )


def _parse_statuses(text: str) -> RetryChoice:
    """What ``--status`` asks to requeue, a usage error naming any word that cannot be."""
    from chatbatch.operations.retry import retry_choice

    try:
        return retry_choice(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--status") from None


def run_control(command: Callable[[Connection, datetime], CommandResult], as_json: bool) -> None:
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
