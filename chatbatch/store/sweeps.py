"""Housekeeping statements: lost leases requeued, overdue results expired, cancellations
settled, finished batches closed (and wrongly closed ones reopened).

Functions take a connection and never commit; the caller owns the unit of work.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Connection,
    case,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from chatbatch.rules.states import (
    ACTIVE_STATUSES,
    BatchStatus,
    Policy,
    RequestStatus,
    RowView,
    after_lease_expired,
    expired_transition,
)
from chatbatch.store import liveness
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import requests_table as r
from chatbatch.store.writes import Write, apply_transitions

CANCELLED_BEFORE_SUBMISSION = "cancelled before it was submitted"


CANCELLED_UNFETCHED = "cancelled with --discard; the result was not fetched (remote_id kept)"


def recover_expired_leases(
    conn: Connection,
    *,
    now: datetime,
    policy: Policy,
    heartbeat_seconds: float | None = None,
    limit: int = 1000,
) -> int:
    """Requeue ``submitting`` rows whose worker vanished (counting a possible duplicate each):
    their lease ran out, or (given ``heartbeat_seconds``) their worker stopped beating."""
    gone = r.c.due_at < now
    if heartbeat_seconds is not None:
        gone = gone | r.c.worker_id.in_(liveness.lost_worker_ids(now, heartbeat_seconds))
    rows = conn.execute(
        select(r.c.id, r.c.batch_id, r.c.lease_token, r.c.attempts)
        .where(r.c.status == RequestStatus.SUBMITTING, gone)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    writes = [
        Write(
            row.id,
            row.batch_id,
            RequestStatus.SUBMITTING,
            row.lease_token,
            after_lease_expired(
                RowView(status=RequestStatus.SUBMITTING, attempts=row.attempts),
                now=now,
                policy=policy,
            ),
        )
        for row in rows
    ]
    return apply_transitions(conn, writes)


def release_lost_polls(conn: Connection, *, now: datetime, heartbeat_seconds: float) -> int:
    """Make the polls a lost worker had claimed due now (their ``due_at`` is a lease), taking
    the claim from it: a GET is safe to repeat, so nothing is counted."""
    lost = r.c.worker_id.in_(liveness.lost_worker_ids(now, heartbeat_seconds))
    result = conn.execute(
        update(r)
        .where(r.c.status == RequestStatus.SUBMITTED, lost)
        .values(
            due_at=case((r.c.due_at > now, now), else_=r.c.due_at),
            lease_token=r.c.lease_token + 1,
            worker_id=None,
        )
    )
    return result.rowcount


def expire_overdue(conn: Connection, *, now: datetime) -> int:
    """Mark submitted rows whose retention window closed as ``expired``."""
    transition = expired_transition(now)
    result = conn.execute(
        update(r)
        .where(r.c.status == RequestStatus.SUBMITTED, r.c.due_at <= now, r.c.expires_at <= now)
        .values(
            status=transition.status,
            due_at=transition.due_at,
            lease_token=r.c.lease_token + 1,
            worker_id=None,
            **transition.changes,
        )
    )
    return result.rowcount


def finish_batches(conn: Connection, *, now: datetime) -> list[str]:
    """Close batches with no active request left: running ones become completed, cancelling ones
    cancelled; returns their ids.

    Two statements, not one: the candidates are locked first (skipping a batch an operator
    holds), then checked again by a statement whose snapshot is taken after the lock, so a
    ``retry`` that committed while we waited is seen and its batch stays open.
    """
    closable = b.c.status.in_([BatchStatus.RUNNING, BatchStatus.CANCELLING]) & ~_has_active()
    candidates = list(
        conn.execute(select(b.c.id).where(closable).with_for_update(skip_locked=True)).scalars()
    )
    if not candidates:
        return []
    closing = case(
        (b.c.status == BatchStatus.CANCELLING, BatchStatus.CANCELLED.value),
        else_=BatchStatus.COMPLETED.value,
    )
    result = conn.execute(
        update(b)
        .where(b.c.id.in_(candidates), closable)
        .values(status=closing, finished_at=now)
        .returning(b.c.id)
    )
    return list(result.scalars())


def reopen_unfinished(conn: Connection, batch_id: str) -> bool:
    """Set a batch that was closed as completed while requests were still active back to
    running (True if it was); anything closed wrongly can then be worked again."""
    result = conn.execute(
        update(b)
        .where(b.c.id == batch_id, b.c.status == BatchStatus.COMPLETED, _has_active())
        .values(status=BatchStatus.RUNNING, finished_at=None)
    )
    return result.rowcount == 1


def _has_active() -> ColumnElement[bool]:
    """Whether the batch of the statement has a request that is not finished."""
    return select(r.c.id).where(r.c.batch_id == b.c.id, r.c.status.in_(ACTIVE_STATUSES)).exists()


def cancel_leftovers(conn: Connection, *, now: datetime) -> int:
    """Mark cancelled what a cancel left behind or what came back to the queue since: queued rows
    of cancelling or cancelled batches, and submitted rows of batches cancelled with --discard."""
    stopping = select(b.c.id).where(b.c.status.in_([BatchStatus.CANCELLING, BatchStatus.CANCELLED]))
    discarded = select(b.c.id).where(b.c.status == BatchStatus.CANCELLED)
    total = 0
    for status, batches, message in (
        (RequestStatus.QUEUED, stopping, CANCELLED_BEFORE_SUBMISSION),
        (RequestStatus.SUBMITTED, discarded, CANCELLED_UNFETCHED),
    ):
        result = conn.execute(
            update(r)
            .where(r.c.status == status, r.c.batch_id.in_(batches.scalar_subquery()))
            .values(
                status=RequestStatus.CANCELLED,
                due_at=now,
                completed_at=now,
                lease_token=r.c.lease_token + 1,
                worker_id=None,
                error_code="cancelled",
                error_message=message,
            )
        )
        total += result.rowcount
    return total
