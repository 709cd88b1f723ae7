"""``chatbatch status``: one batch's progress, usage, problems and cost."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from cli.context import handles_errors, ready_database, setup_logging
from cli.prices import priced_summary, prices_option
from cli.providers import providers_option
from cli.render import print_summary


@click.command("status")
@click.argument("batch")
@click.option("--json", "as_json", is_flag=True, help="Print the status object as JSON.")
@prices_option
@providers_option
@handles_errors
def status_command(batch: str, as_json: bool, prices_path: Path | None) -> None:
    """Progress, usage and problems of a batch (by id or name); with a price table (given here or
    stored by `load --prices`), the cost so far and a projected total."""
    from chatbatch.store import reads

    setup_logging()
    with ready_database().connect() as conn:
        row = reads.resolve_batch(conn, batch)
        summary = priced_summary(conn, row, prices_path)
    if as_json:
        click.echo(orjson.dumps(summary))
    else:
        print_summary(summary)
