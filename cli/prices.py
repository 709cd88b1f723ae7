"""The price table a command prices with: ``--prices``, else ``CHATBATCH_PRICES``, else (for one
batch) the table stored with it at load time."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli.context import settings

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from chatbatch.reporting.summary import BatchSummary
    from chatbatch.rules.pricing import PriceTable

prices_option = click.option(
    "--prices",
    "prices_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML price table to compute cost with (default: $CHATBATCH_PRICES).",
)


def price_table(path: Path | None) -> PriceTable | None:
    """The price table from ``--prices`` or ``CHATBATCH_PRICES``; None when neither is set (an
    empty setting counts as unset)."""
    from chatbatch.rules.pricing import load_prices

    chosen = path or settings().prices
    return load_prices(chosen) if chosen and chosen != Path() else None


def prices_for_batch(batch: Any, path: Path | None = None) -> PriceTable | None:
    """The price table for one batch: ``--prices``/``CHATBATCH_PRICES`` when given, else the
    table stored with the batch at load time, else None."""
    from chatbatch.reporting.summary import batch_prices

    return batch_prices(batch, price_table(path))


def priced_summary(conn: Connection, batch: Any, path: Path | None = None) -> BatchSummary:
    """The status object of ``batch``, with its ``cost`` when a price table is known (given, set
    or stored): what ``status``, ``list`` and a finished ``run`` print."""
    from chatbatch.reporting.summary import status_object

    return status_object(conn, batch, config=settings(), prices=prices_for_batch(batch, path))
