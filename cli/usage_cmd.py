"""``chatbatch usage``: tokens and cost by batch, model, day or provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from chatbatch.untrusted import printable
from cli.context import handles_errors, ready_database, setup_logging
from cli.prices import price_table, prices_for_batch, prices_option
from cli.providers import providers_option
from cli.render import unpriced_text

WIDE_ENOUGH = 160  # columns when stdout is not a terminal (rich would squeeze to 80)
TOKEN_COLUMNS = (
    ("prompt", "prompt_tokens"),
    ("cached", "cached_tokens"),
    ("completion", "completion_tokens"),
    ("reasoning", "reasoning_tokens"),
    ("total", "total_tokens"),
    ("units", "billed_units"),
)


@click.command("usage")
@click.argument("batch", required=False)
@click.option(
    "--by",
    type=click.Choice(["batch", "model", "day", "provider"]),
    help="Group by batch, model, UTC day or provider (default: model for one batch, batch for "
    "all).",
)
@prices_option
@providers_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handles_errors
def usage_command(
    batch: str | None, by: str | None, prices_path: Path | None, as_json: bool
) -> None:
    """Tokens and cost of one batch (id or name) or of all batches. Retried answers count too:
    the provider billed them. One batch is priced with --prices/CHATBATCH_PRICES, else with the
    table stored by `load --prices`."""
    from chatbatch.reporting.usage import Grouping, usage_report
    from chatbatch.store import reads

    setup_logging()
    grouping = Grouping(by or ("model" if batch else "batch"))
    with ready_database().connect() as conn:
        row = reads.resolve_batch(conn, batch) if batch else None
        # One batch: the table given, else the one stored with it at load time, as status does.
        prices = prices_for_batch(row, prices_path) if row else price_table(prices_path)
        batch_id = row.id if row else None
        report = usage_report(conn, by=grouping, batch_id=batch_id, prices=prices)
    result = report.as_dict()
    if report.unpriced:
        click.echo(
            f"warning: cost unknown, the price table does not cover: "
            f"{unpriced_text(report.unpriced)}",
            err=True,
        )
    if as_json:
        click.echo(orjson.dumps(result))
        return
    if prices is None:
        click.echo("no price table (--prices FILE or CHATBATCH_PRICES): tokens only", err=True)
    print_usage(result, priced=prices is not None)


def print_usage(result: dict[str, Any], *, priced: bool) -> None:
    """The report as a table, with a total line."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=WIDE_ENOUGH)
    table = Table(show_footer=len(result["rows"]) > 1, box=None, pad_edge=False)
    total = result["total"]
    table.add_column(result["by"], footer="total")
    table.add_column("answers", justify="right", footer=f"{total['answers']:,}")
    for title, key in TOKEN_COLUMNS:
        table.add_column(title, justify="right", footer=f"{total[key]:,}")
    places = _places([*result["rows"], total])
    if priced:
        cost_total = _money(total, places)
        table.add_column(f"cost ({result['currency']})", justify="right", footer=cost_total)
    for row in result["rows"]:
        # A model name comes from the provider's answer: no escapes, no rich markup.
        key = "(not recorded)" if row["key"] is None else printable(row["key"])
        cells: list[str | Text] = [Text(key), f"{row['answers']:,}"]
        cells += [f"{row[key]:,}" for _, key in TOKEN_COLUMNS]
        table.add_row(*cells, *([_money(row, places)] if priced else []))
    if not result["rows"]:
        console.print("no answers with usage yet")
        return
    console.print(table)


def _places(rows: list[dict[str, Any]]) -> int:
    """Decimal places of the most precise amount, so the column lines up (exact, zero-padded)."""
    amounts = [row.get("cost") or row.get("cost_priced_part") or "" for row in rows]
    return max((len(a.partition(".")[2]) for a in amounts), default=0)


def _money(row: dict[str, Any], places: int) -> str:
    """A row's cost padded to ``places``, or ``unknown`` with the priced part as a lower bound."""
    if row["cost"] is not None:
        return _padded(row["cost"], places)
    part = row.get("cost_priced_part")
    return f"unknown (≥ {_padded(part, places)})" if part not in (None, "0") else "unknown"


def _padded(amount: str, places: int) -> str:
    """Decimal text with its fraction zero-padded to ``places``, so the column lines up."""
    whole, _, fraction = amount.partition(".")
    return f"{whole}.{fraction.ljust(places, '0')}" if places else whole
