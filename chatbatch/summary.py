"""The status object of a batch, as ``status --json`` and ``list --json`` print it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row

from chatbatch import queries


def batch_summary(conn: Connection, batch: Row[Any]) -> dict[str, Any]:
    """Counts by state, summed usage and the batch's own fields."""
    usage = queries.usage_totals(conn, batch.id)
    possible_duplicates = usage.pop("possible_duplicates")
    return {
        "id": batch.id,
        "name": batch.name,
        "status": batch.status,
        "pause_reason": batch.pause_reason,
        "total": batch.total,
        "counts": queries.status_counts(conn, batch.id),
        "usage": usage,
        "possible_duplicates": possible_duplicates,
        "source": batch.source,
        "created_at": _iso(batch.created_at),
        "finished_at": _iso(batch.finished_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
