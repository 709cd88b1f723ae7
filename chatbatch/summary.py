"""The status object of a batch, as ``status --json`` and ``list --json`` print it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row

from chatbatch import queries
from chatbatch.db import db_now


def batch_summary(
    conn: Connection, batch: Row[Any], *, expiry_warning: timedelta
) -> dict[str, Any]:
    """Counts by state, summed usage, results at risk of expiring, and the batch's own fields.

    ``expiring`` counts submitted requests whose provider deadline is less than
    ``expiry_warning`` away: if nothing fetches them in time their results are lost.
    """
    usage = queries.usage_totals(conn, batch.id)
    possible_duplicates = usage.pop("possible_duplicates")
    now = db_now(conn)
    at_risk, earliest = queries.expiry_risk(conn, batch.id, before=now + expiry_warning)
    return {
        "id": batch.id,
        "name": batch.name,
        "status": batch.status,
        "pause_reason": batch.pause_reason,
        "total": batch.total,
        "counts": queries.status_counts(conn, batch.id),
        "usage": usage,
        "possible_duplicates": possible_duplicates,
        "expiring": {"count": at_risk, "earliest_deadline": _iso(earliest)},
        "source": batch.source,
        "created_at": _iso(batch.created_at),
        "finished_at": _iso(batch.finished_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
