"""Claiming due work: submissions only as the rate limiter allows, polls by due time, and
the reads that size and time the claims. A claim marks its rows, with a lease, in one statement.

Functions take a connection and never commit; the caller owns the unit of work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    Connection,
    func,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from chatbatch.rules.states import (
    AnswerCheck,
    BatchStatus,
    RequestStatus,
    RowView,
)
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import requests_table as r

POLLABLE_BATCHES = (BatchStatus.RUNNING, BatchStatus.PAUSED, BatchStatus.CANCELLING)


@dataclass(frozen=True)
class SubmitClaim:
    """A queued row claimed for one POST: already ``submitting``, its attempt counted."""

    id: int
    batch_id: str
    lease_token: int
    attempts: int
    model: str
    body: str
    retries: int
    invalid_retries: int
    provider: str | None = None  # which provider serves it: the engine routes it after claiming

    def view(self) -> RowView:
        return RowView(
            status=RequestStatus.SUBMITTING,
            attempts=self.attempts,
            retries=self.retries,
            invalid_retries=self.invalid_retries,
        )


@dataclass(frozen=True)
class PollClaim:
    """A row claimed for one poll (still ``submitted``, its ``due_at`` pushed out as a lease)."""

    id: int
    batch_id: str
    lease_token: int
    remote_id: str
    poll_count: int
    submitted_at: datetime | None
    polled_at: datetime | None
    expires_at: datetime | None
    model: str
    retries: int
    invalid_retries: int
    poll_strikes: int
    provider: str | None  # the provider that accepted the task (None: stored before 0006)

    def view(self) -> RowView:
        return RowView(
            status=RequestStatus.SUBMITTED,
            poll_count=self.poll_count,
            submitted_at=self.submitted_at,
            expires_at=self.expires_at,
            remote_id=self.remote_id,
            retries=self.retries,
            invalid_retries=self.invalid_retries,
            poll_strikes=self.poll_strikes,
        )


def claim_for_submit(
    conn: Connection,
    *,
    now: datetime,
    limit: int,
    lease_seconds: float,
    capped: Mapping[str, int] | None = None,
    model: str | None = None,
    batch_id: str | None = None,
) -> list[SubmitClaim]:
    """Claim up to ``limit`` due queued rows of running batches (of ``model``, if given) and mark
    them ``submitting``, counting the attempt, in one statement; the caller POSTs them at once.
    A worker lost after this commit leaves rows that lease recovery resubmits as possible
    duplicates, so callers claim only what the rate limiter already let through and what they
    can have in flight. ``capped`` limits how many rows of some batches may be taken (their
    cost caps); ``batch_id`` keeps to one batch."""
    of_model = _both(r.c.model == model, _of_batch(batch_id)) if model else _of_batch(batch_id)
    if not capped:
        return _claim_submits(conn, now, limit, lease_seconds, of_model)
    uncapped = _both(r.c.batch_id.not_in(list(capped)), of_model)
    claims = _claim_submits(conn, now, limit, lease_seconds, uncapped)
    for batch_id, allowed in capped.items():
        room = min(allowed, limit - len(claims))
        if room <= 0:
            continue
        which = _both(r.c.batch_id == batch_id, of_model)
        taken = _claim_submits(conn, now, room, lease_seconds, which)
        if taken:
            conn.execute(
                update(b)
                .where(b.c.id == batch_id)
                .values(capped_claims=b.c.capped_claims + len(taken))
            )
        claims += taken
    return claims


def due_submission_models(
    conn: Connection,
    *,
    now: datetime,
    limit: int,
    excluding: Collection[str] = (),
    batch_id: str | None = None,
) -> Counter[str]:
    """The models of the next ``limit`` rows due for submission (oldest first; of one batch,
    if given), counted: what to ask the rate limiter for before claiming any. Models in
    ``excluding`` (held back by the limiter) are passed over, so they do not hide other
    models' due rows."""
    due = (
        select(r.c.model)
        .join(b, b.c.id == r.c.batch_id)
        .where(r.c.status == RequestStatus.QUEUED, r.c.due_at <= now)
        .where(b.c.status == BatchStatus.RUNNING)
    )
    if batch_id is not None:
        due = due.where(r.c.batch_id == batch_id)
    if excluding:
        due = due.where(r.c.model.not_in(list(excluding)))
    return Counter(conn.execute(due.order_by(r.c.due_at).limit(limit)).scalars())


def _both(condition: ColumnElement[bool], extra: ColumnElement[bool] | None) -> ColumnElement[bool]:
    return condition if extra is None else condition & extra


def _of_batch(batch_id: str | None) -> ColumnElement[bool] | None:
    return None if batch_id is None else r.c.batch_id == batch_id


def _claim_submits(
    conn: Connection,
    now: datetime,
    limit: int,
    lease_seconds: float,
    which: ColumnElement[bool] | None,
) -> list[SubmitClaim]:
    due = (
        select(r.c.id)
        .join(b, b.c.id == r.c.batch_id)
        .where(r.c.status == RequestStatus.QUEUED, r.c.due_at <= now)
        .where(b.c.status == BatchStatus.RUNNING)
    )
    if which is not None:
        due = due.where(which)
    due_rows = (
        due.order_by(r.c.due_at).limit(limit).with_for_update(skip_locked=True, of=r).cte("due")
    )
    stmt = (
        update(r)
        .where(r.c.id == due_rows.c.id)
        .values(
            status=RequestStatus.SUBMITTING,
            attempts=r.c.attempts + 1,
            due_at=now + timedelta(seconds=lease_seconds),
            lease_token=r.c.lease_token + 1,
        )
        .returning(
            r.c.id,
            r.c.batch_id,
            r.c.lease_token,
            r.c.attempts,
            r.c.model,
            r.c.body,
            r.c.retries,
            r.c.invalid_retries,
        )
    )
    return [SubmitClaim(*row) for row in conn.execute(stmt)]


def claim_for_poll(
    conn: Connection,
    *,
    now: datetime,
    limit: int,
    lease_seconds: float,
    batch_id: str | None = None,
) -> list[PollClaim]:
    """Claim up to ``limit`` submitted rows due a poll (of one batch, if given); pushing
    ``due_at`` out is the lease."""
    due = (
        select(r.c.id)
        .join(b, b.c.id == r.c.batch_id)
        .where(r.c.status == RequestStatus.SUBMITTED, r.c.due_at <= now)
        .where(b.c.status.in_(POLLABLE_BATCHES))
    )
    if batch_id is not None:
        due = due.where(r.c.batch_id == batch_id)
    due_rows = due.order_by(r.c.due_at).limit(limit).with_for_update(skip_locked=True, of=r)
    claimed = due_rows.cte("due")
    stmt = (
        update(r)
        .where(r.c.id == claimed.c.id)
        .values(due_at=now + timedelta(seconds=lease_seconds), lease_token=r.c.lease_token + 1)
        .returning(
            r.c.id,
            r.c.batch_id,
            r.c.lease_token,
            r.c.remote_id,
            r.c.poll_count,
            r.c.submitted_at,
            r.c.polled_at,
            r.c.expires_at,
            r.c.model,
            r.c.retries,
            r.c.invalid_retries,
            r.c.poll_strikes,
            r.c.provider,
        )
    )
    return [PollClaim(*row) for row in conn.execute(stmt)]


def answer_checks(conn: Connection, batch_ids: Collection[str]) -> dict[str, AnswerCheck | None]:
    """Each batch's schema check (None: the batch has no schema), for the engine's cache: a
    batch's schema is fixed when it is loaded."""
    rows = conn.execute(
        select(b.c.id, b.c.response_schema, b.c.retry_invalid).where(b.c.id.in_(list(batch_ids)))
    )
    return {
        batch_id: AnswerCheck(schema, retry_invalid or 0) if schema else None
        for batch_id, schema, retry_invalid in rows
    }


def count_due(conn: Connection, *, now: datetime, cap: int) -> int:
    """How many rows are ready for a worker now (up to ``cap``): used to size wake-ups."""
    due = (
        select(r.c.id)
        .join(b, b.c.id == r.c.batch_id)
        .where(
            ((r.c.status == RequestStatus.QUEUED) & (b.c.status == BatchStatus.RUNNING))
            | ((r.c.status == RequestStatus.SUBMITTED) & b.c.status.in_(POLLABLE_BATCHES))
            | (r.c.status == RequestStatus.SUBMITTING)
        )
        .where(r.c.due_at <= now)
        .limit(cap)
        .subquery()
    )
    return conn.execute(select(func.count()).select_from(due)).scalar_one()


def next_claimable_at(conn: Connection, batch_id: str | None = None) -> datetime | None:
    """When a worker next has something to claim in any batch (or in ``batch_id``; None:
    nothing is waiting)."""
    firsts = []
    for status, batches in (
        (RequestStatus.QUEUED, (BatchStatus.RUNNING,)),
        (RequestStatus.SUBMITTED, POLLABLE_BATCHES),
    ):
        first_due = (
            select(r.c.due_at)
            .join(b, b.c.id == r.c.batch_id)
            .where(r.c.status == status, b.c.status.in_(batches))
        )
        if batch_id is not None:
            first_due = first_due.where(r.c.batch_id == batch_id)
        first = conn.execute(first_due.order_by(r.c.due_at).limit(1)).scalar_one_or_none()
        if first is not None:
            firsts.append(first)
    return min(firsts, default=None)
