"""The status object of a batch, as ``status --json`` and ``list --json`` print it."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row

from chatbatch.reporting.report_data import error_groups
from chatbatch.reporting.usage import Grouping, usage_report
from chatbatch.rules.pricing import PriceTable, format_money
from chatbatch.rules.states import TERMINAL_STATUSES
from chatbatch.store import reads
from chatbatch.store.db import db_now

PROJECTION_EXPONENT = -6
TOP_FAILURES = 3


def batch_summary(
    conn: Connection, batch: Row[Any], *, expiry_warning: timedelta
) -> dict[str, Any]:
    """Counts by state, summed usage, results at risk of expiring, and the batch's own fields.

    ``expiring`` counts submitted requests whose provider deadline is less than
    ``expiry_warning`` away: if nothing fetches them in time their results are lost.
    """
    usage = reads.usage_totals(conn, batch.id)
    possible_duplicates = usage.pop("possible_duplicates")
    usage_clamped = usage.pop("usage_clamped")
    now = db_now(conn)
    at_risk, earliest = reads.expiry_risk(conn, batch.id, before=now + expiry_warning)
    summary = {
        "id": batch.id,
        "name": batch.name,
        "status": batch.status,
        "pause_reason": batch.pause_reason,
        "total": batch.total,
        "counts": reads.status_counts(conn, batch.id),
        "usage": usage,
        "possible_duplicates": possible_duplicates,
        "usage_clamped": usage_clamped,
        "expiring": {"count": at_risk, "earliest_deadline": _iso(earliest)},
        "source": batch.source,
        "created_at": _iso(batch.created_at),
        "finished_at": _iso(batch.finished_at),
    }
    summary["failures"] = top_failures(conn, batch.id)
    if batch.response_schema:
        summary["schema"] = schema_summary(conn, batch.id)
    return summary


def top_failures(conn: Connection, batch_id: str) -> list[dict[str, Any]]:
    """The most frequent reasons requests failed or expired (answers that broke the schema
    too), each with a count and one example."""
    groups = error_groups(conn, batch_id, examples=1)[:TOP_FAILURES]
    return [
        {
            "code": group.code,
            "count": group.count,
            "example": {
                "custom_id": group.examples[0].custom_id,
                "message": group.examples[0].message,
            }
            if group.examples
            else None,
        }
        for group in groups
    ]


def schema_summary(conn: Connection, batch_id: str) -> dict[str, Any]:
    """How many answers follow the batch's schema, the share that do (None before any answer),
    and how many invalid answers were asked again."""
    counts = reads.schema_counts(conn, batch_id)
    judged = counts["valid"] + counts["invalid"]
    return {
        "valid": counts["valid"],
        "invalid": counts["invalid"],
        "pass_rate": counts["valid"] / judged if judged else None,
        "retried": counts["retried"],
    }


def cost_summary(conn: Connection, batch: Row[Any], *, prices: PriceTable) -> dict[str, Any]:
    """What the batch has cost so far (exact, retried answers included) and a projected total:
    so far, plus the current round's average cost per finished request for each request still
    open. Amounts are decimal text, null when some model has no price."""
    spent = usage_report(conn, by=Grouping.MODEL, batch_id=batch.id, prices=prices).total_cost
    current = usage_report(
        conn, by=Grouping.MODEL, batch_id=batch.id, prices=prices, include_past=False
    ).total_cost
    counts = reads.status_counts(conn, batch.id)
    finished = sum(counts[s] for s in TERMINAL_STATUSES)
    projected = None
    if spent and spent.amount is not None and current and current.amount is not None and finished:
        still_open = batch.total - finished
        projected = spent.amount + current.amount / finished * still_open
        if still_open:  # as precise as the spend, at least to the millionth
            places = min(int(spent.amount.as_tuple().exponent), PROJECTION_EXPONENT)
            projected = projected.quantize(Decimal(1).scaleb(places))
    return {
        "currency": prices.currency,
        "so_far": format_money(spent.amount if spent else None),
        "projected_total": format_money(projected),
        "unpriced_models": dict(spent.missing) if spent else {},
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
