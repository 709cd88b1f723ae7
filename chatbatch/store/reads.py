"""What the CLI and the reports read about a batch: finding it, its counts, usage, expiry risk,
and the completion times poll planning learns from.

Functions take a connection and never commit; the caller owns the unit of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Select,
    func,
    select,
)

from chatbatch.errors import NotFoundError
from chatbatch.rules.completions import USAGE_COLUMNS
from chatbatch.rules.states import (
    ACTIVE_STATUSES,
    ANSWERED_STATUSES,
    BatchStatus,
    RequestStatus,
)
from chatbatch.store.db import masked_url
from chatbatch.store.models import all_requests_table as every
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import past_results_table as past_results
from chatbatch.store.models import requests_table as r


def completion_observations(
    conn: Connection, model: str, *, since: datetime, limit: int = 5000
) -> list[tuple[float, float | None]]:
    """What polling has shown of ``model``'s completion times, for requests submitted since
    ``since`` (the first ``limit`` loaded, so which ones are picked has nothing to do with how
    long they take): ``(pending_until, ready_by)`` in seconds after submission, ``ready_by``
    None for one still pending at its last poll."""
    rows = conn.execute(
        select(r.c.status, r.c.submitted_at, r.c.polled_at, r.c.completed_at)
        .where(
            r.c.model == model,
            r.c.submitted_at >= since,
            r.c.status.in_([RequestStatus.SUBMITTED, RequestStatus.SUCCEEDED]),
        )
        .order_by(r.c.id)
        .limit(limit)
    )
    observations: list[tuple[float, float | None]] = []
    for status, submitted_at, polled_at, completed_at in rows:
        pending_until = (polled_at - submitted_at).total_seconds() if polled_at else 0.0
        ready_by = None
        if status == RequestStatus.SUCCEEDED and completed_at is not None:
            ready_by = (completed_at - submitted_at).total_seconds()
        observations.append((pending_until, ready_by))
    return observations


def next_due_at(conn: Connection, batch_id: str) -> datetime | None:
    """When the batch next has work for a worker (None when nothing is active)."""
    return conn.execute(
        select(func.min(r.c.due_at)).where(
            r.c.batch_id == batch_id, r.c.status.in_(ACTIVE_STATUSES)
        )
    ).scalar_one()


def resolve_batch(conn: Connection, ref: str) -> Row[Any]:
    """A batch by id or by name; NotFoundError names the database looked in (password
    hidden), so a batch in another database is easy to tell from one that does not exist."""
    row = conn.execute(select(b).where((b.c.id == ref) | (b.c.name == ref))).first()
    if row is None:
        where = masked_url(conn.engine.url)
        raise NotFoundError(f"no batch with id or name {ref!r} in {where}")
    return row


def batch_name_of(conn: Connection, batch_id: str) -> str:
    """The name of the batch with ``batch_id``."""
    return str(conn.execute(select(b.c.name).where(b.c.id == batch_id)).scalar_one())


def list_batches(
    conn: Connection,
    *,
    status: str | None = None,
    name_part: str | None = None,
    limit: int | None = None,
) -> Sequence[Row[Any]]:
    """Batches newest first: all of them, or those in ``status`` whose name contains
    ``name_part`` (any case), at most ``limit``."""
    chosen = select(b).order_by(b.c.created_at.desc(), b.c.id).limit(limit)
    if status is not None:
        chosen = chosen.where(b.c.status == status)
    if name_part:
        chosen = chosen.where(func.lower(b.c.name).contains(name_part.lower(), autoescape=True))
    return conn.execute(chosen).all()


def status_counts(conn: Connection, batch_id: str) -> dict[str, int]:
    """Requests per status, every status present (zeros included)."""
    counts = {status.value: 0 for status in RequestStatus}
    rows = conn.execute(
        select(every.c.status, func.count())
        .where(every.c.batch_id == batch_id)
        .group_by(every.c.status)
    )
    for status, count in rows:
        counts[status] = count
    return counts


def provider_counts(conn: Connection, batch_id: str) -> dict[str, int]:
    """Requests per provider they were sent to, by name (those not sent yet are left out)."""
    rows = conn.execute(
        select(every.c.provider, func.count())
        .where(every.c.batch_id == batch_id, every.c.provider.is_not(None))
        .group_by(every.c.provider)
        .order_by(every.c.provider)
    )
    return {provider: count for provider, count in rows}


def schema_counts(conn: Connection, batch_id: str) -> dict[str, int]:
    """How many answered requests follow the batch's schema and how many do not, and how many
    invalid answers were asked again."""
    answered = every.c.status.in_(ANSWERED_STATUSES)
    valid, invalid, retried = conn.execute(
        select(
            func.count().filter(answered, every.c.schema_valid.is_(True)),
            func.count().filter(answered, every.c.schema_valid.is_(False)),
            func.coalesce(func.sum(every.c.invalid_retries), 0),
        ).where(every.c.batch_id == batch_id)
    ).one()
    return {"valid": int(valid), "invalid": int(invalid), "retried": int(retried)}


def usage_totals(conn: Connection, batch_id: str) -> dict[str, int]:
    """Summed usage of every provider answer the batch got, including outcomes that a retry
    replaced, how many of those answers had usage clamped into range, and possible duplicates;
    exact integers."""
    totals = dict.fromkeys((*USAGE_COLUMNS, "usage_clamped"), 0)
    for table in (every, past_results):
        sums = [func.coalesce(func.sum(table.c[name]), 0) for name in USAGE_COLUMNS]
        clamped = func.count().filter(table.c.usage_clamped.is_(True))
        row = conn.execute(select(*sums, clamped).where(table.c.batch_id == batch_id)).one()
        for name, value in zip((*USAGE_COLUMNS, "usage_clamped"), row, strict=True):
            totals[name] += int(value)
    duplicates = select(func.coalesce(func.sum(every.c.ambiguous_submits), 0))
    totals["possible_duplicates"] = int(
        conn.execute(duplicates.where(every.c.batch_id == batch_id)).scalar_one()
    )
    return totals


def expiry_risk(
    conn: Connection, batch_id: str, *, before: datetime
) -> tuple[int, datetime | None]:
    """How many submitted requests must be fetched before ``before`` or be lost, and the earliest
    such deadline."""
    count, earliest = conn.execute(
        select(func.count(), func.min(r.c.expires_at)).where(
            r.c.batch_id == batch_id,
            r.c.status.in_([RequestStatus.SUBMITTING, RequestStatus.SUBMITTED]),
            r.c.expires_at <= before,
        )
    ).one()
    return int(count), earliest


STALLABLE = (BatchStatus.RUNNING, BatchStatus.CANCELLING)


def stalled_batches(conn: Connection, *, now: datetime, stall_after: timedelta) -> list[Row[Any]]:
    """Batches being worked that have work due yet no request got a task
    id or an answer for ``stall_after``: (id, since) rows, ``since`` the last progress."""
    return list(conn.execute(_stalled(now, stall_after)))


def stalled_since(
    conn: Connection, batch_id: str, *, now: datetime, stall_after: timedelta
) -> datetime | None:
    """When batch ``batch_id`` last made progress, if it is stalled now (None: it is not)."""
    row = conn.execute(_stalled(now, stall_after).where(b.c.id == batch_id)).first()
    return None if row is None else row.since


def _stalled(now: datetime, stall_after: timedelta) -> Select[tuple[str, datetime]]:
    since = func.coalesce(b.c.progressed_at, b.c.created_at)
    due_work = (
        select(r.c.id)
        .where(r.c.batch_id == b.c.id, r.c.status.in_(ACTIVE_STATUSES), r.c.due_at <= now)
        .exists()
    )
    return (
        select(b.c.id, since.label("since"))
        .where(b.c.status.in_(STALLABLE), since < now - stall_after)
        .where(due_work)
    )


def average_completion_tokens(
    conn: Connection, models: Sequence[str]
) -> dict[str, tuple[float, int]]:
    """Each of ``models``' mean completion tokens over its succeeded answers in every batch
    (archived too), and how many answers that is: what a dry run expects an answer to cost."""
    rows = conn.execute(
        select(every.c.model, func.avg(every.c.completion_tokens), func.count())
        .where(
            every.c.model.in_(list(models)),
            every.c.status == RequestStatus.SUCCEEDED,
            every.c.completion_tokens.is_not(None),
        )
        .group_by(every.c.model)
    )
    return {model: (float(mean), int(n)) for model, mean, n in rows if n}
