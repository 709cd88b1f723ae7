"""Notifications: a batch's events, recorded once where they happen, sent by any worker.

An event is recorded in the transaction that made it happen (a batch closed, paused, found
with results about to expire), only for a batch with a ``notify_url``, and at most once per
``key``. A worker claims unsent events for a while, POSTs them and marks them sent; one that
dies mid-send loses its claim and another sends again (each event has an ``event_id`` the
receiver can de-duplicate on). Functions take a connection and never commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, select, update

from chatbatch.rules.states import RequestStatus
from chatbatch.store import reads
from chatbatch.store.db import db_now
from chatbatch.store.dialect import insert_if_new
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import notifications_table as n
from chatbatch.store.models import requests_table as r

FINISHED = "batch.finished"
PAUSED = "batch.paused"
EXPIRING = "batch.expiring"
STALLED = "batch.stalled"
MAX_ATTEMPTS = 10  # sends of one event before it is given up on (its error stays recorded)


@dataclass(frozen=True)
class Pending:
    """An event claimed for sending."""

    id: int
    event_id: str
    batch_id: str
    event: str
    detail: str | None
    attempts: int
    url: str


def record(
    conn: Connection,
    batch_id: str,
    event: str,
    *,
    key: str | None = None,
    detail: str | None = None,
) -> bool:
    """Record ``event`` of ``batch_id`` if the batch has a ``notify_url`` and no event with
    ``key`` was recorded (no key: every call is a new event); True if recorded."""
    url = conn.execute(select(b.c.notify_url).where(b.c.id == batch_id)).scalar_one_or_none()
    if not url:
        return False
    event_id = uuid.uuid4().hex
    values = {
        "event_id": event_id,
        "batch_id": batch_id,
        "event": event,
        "key": key or event_id,
        "detail": detail,
        "created_at": db_now(conn),
    }
    return insert_if_new(conn, n, values, ["batch_id", "key"])


def set_url(conn: Connection, batch_id: str, url: str) -> None:
    """Send the batch's events to ``url`` from now on."""
    conn.execute(update(b).where(b.c.id == batch_id).values(notify_url=url))


def record_expiring(conn: Connection, *, now: datetime, warning: timedelta) -> list[str]:
    """Record ``batch.expiring``, once per batch, for each batch to notify that has submitted
    requests whose results expire within ``warning``; the batches recorded."""
    notified = select(n.c.batch_id).where(n.c.event == EXPIRING)
    candidates = select(b.c.id).where(b.c.notify_url.is_not(None), b.c.id.not_in(notified))
    at_risk = (
        select(r.c.batch_id)
        .where(r.c.batch_id.in_(candidates.scalar_subquery()))
        .where(r.c.status == RequestStatus.SUBMITTED, r.c.expires_at < now + warning)
        .distinct()
    )
    batch_ids = list(conn.execute(at_risk).scalars())
    return [batch for batch in batch_ids if record(conn, batch, EXPIRING, key=EXPIRING)]


def record_stalled(conn: Connection, *, now: datetime, stall_after: timedelta) -> list[str]:
    """Record ``batch.stalled``, once per stall, for each batch to notify that has work due
    and no progress for ``stall_after``; the batches recorded."""
    recorded = []
    for row in reads.stalled_batches(conn, now=now, stall_after=stall_after):
        since = row.since.isoformat()
        detail = f"work is due but nothing has progressed since {since}"
        if record(conn, row.id, STALLED, key=f"stalled:{since}", detail=detail):
            recorded.append(row.id)
    return recorded


def claim(
    conn: Connection,
    *,
    now: datetime,
    hold: timedelta,
    limit: int = 20,
    batch_id: str | None = None,
) -> list[Pending]:
    """Claim unsent events (of one batch, if given) for ``hold``, counting the attempt."""
    due = (
        select(n.c.id)
        .where(n.c.sent_at.is_(None), n.c.attempts < MAX_ATTEMPTS)
        .where(n.c.claimed_until.is_(None) | (n.c.claimed_until < now))
        .order_by(n.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if batch_id is not None:
        due = due.where(n.c.batch_id == batch_id)
    claimed = conn.execute(
        update(n)
        .where(n.c.id.in_(due.scalar_subquery()))
        .values(claimed_until=now + hold, attempts=n.c.attempts + 1)
        .returning(n.c.id, n.c.event_id, n.c.batch_id, n.c.event, n.c.detail, n.c.attempts)
    ).all()
    of_batches = select(b.c.id, b.c.notify_url).where(b.c.id.in_({c.batch_id for c in claimed}))
    urls = {row.id: row.notify_url for row in conn.execute(of_batches)}
    return [
        Pending(row.id, row.event_id, row.batch_id, row.event, row.detail, row.attempts, url)
        for row in claimed
        if (url := urls.get(row.batch_id))
    ]


def mark_sent(conn: Connection, notification_id: int, *, now: datetime) -> None:
    conn.execute(update(n).where(n.c.id == notification_id).values(sent_at=now, error=None))


def mark_failed(conn: Connection, notification_id: int, *, error: str, retry_at: datetime) -> None:
    """Keep why the send failed; the event is sent again from ``retry_at``."""
    conn.execute(
        update(n).where(n.c.id == notification_id).values(error=error[:500], claimed_until=retry_at)
    )
