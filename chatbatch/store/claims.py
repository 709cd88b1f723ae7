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
    union_all,
    update,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import CTE, Select

from chatbatch.rules import fair_share
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
    worker_id: str | None = None,
) -> list[SubmitClaim]:
    """Claim up to ``limit`` due queued rows of running batches (of ``model``, if given) and mark
    them ``submitting``, counting the attempt, in one statement; the caller POSTs them at once.
    The running batches share the claim by priority (``rules.fair_share``); when rows another
    claim holds were among those picked, a second statement takes what is due instead. A worker lost
    after this commit leaves rows that liveness or lease recovery resubmits as possible
    duplicates, so callers claim only what the rate limiter already let through and what they
    can have in flight. ``capped`` limits how many rows of some batches may be taken (their
    cost caps); ``batch_id`` keeps to one batch; ``worker_id`` is recorded as the holder."""
    parts = _shares(conn, limit, batch_id, capped or {})
    if not parts:
        return []
    of_model = None if model is None else r.c.model == model
    ranked = _ranked(parts, now, of_model)
    fair = select(r.c.id).join(ranked, ranked.c.id == r.c.id).order_by(ranked.c.vt)
    claims = _claim_submits(conn, now, limit, lease_seconds, fair, worker_id)
    if len(claims) < limit:
        due = _due_in_order(now, of_model, batch_id, excluded=capped or {})
        claims += _claim_submits(conn, now, limit - len(claims), lease_seconds, due, worker_id)
    for batch, taken in Counter(claim.batch_id for claim in claims).items():
        if capped and batch in capped:
            conn.execute(
                update(b).where(b.c.id == batch).values(capped_claims=b.c.capped_claims + taken)
            )
    return claims


def due_submission_models(
    conn: Connection,
    *,
    now: datetime,
    limit: int,
    excluding: Collection[str] = (),
    batch_id: str | None = None,
) -> Counter[str]:
    """The models of the ``limit`` rows due for submission that a claim would take now (the
    running batches sharing them by priority; of one batch, if given), counted: what to ask
    the rate limiter for before claiming any. Models in ``excluding`` (held back by the
    limiter) are passed over, so they do not hide other models' due rows."""
    parts = _shares(conn, limit, batch_id, {})
    if not parts:
        return Counter()
    which = r.c.model.not_in(list(excluding)) if excluding else None
    ranked = _ranked(parts, now, which)
    picked = select(r.c.model).join(ranked, ranked.c.id == r.c.id).order_by(ranked.c.vt)
    return Counter(conn.execute(picked.limit(limit)).scalars())


def _shares(
    conn: Connection, limit: int, batch_id: str | None, capped: Mapping[str, int]
) -> list[fair_share.Share]:
    """How the running batches (or ``batch_id`` alone) share a claim of ``limit`` rows."""
    runnable = select(b.c.id, b.c.priority).where(b.c.status == BatchStatus.RUNNING)
    if batch_id is not None:
        runnable = runnable.where(b.c.id == batch_id)
    return fair_share.shares(
        [(row.id, row.priority) for row in conn.execute(runnable)], limit=limit, capped=capped
    )


def _ranked(parts: list[fair_share.Share], now: datetime, which: ColumnElement[bool] | None) -> CTE:
    """Each share's next due rows (those matching ``which``) with their virtual times: one
    index-backed branch per batch (``ix_requests_queued_batch_due``), all in one statement."""
    branches = []
    for part in parts:
        # ROWS, not the default RANGE frame: PostgreSQL would read every row sharing a due
        # time (all of a freshly loaded batch) before numbering the first.
        rank = func.row_number().over(order_by=r.c.due_at, rows=(None, 0)) - 1 + part.start
        branch = (
            select(r.c.id, (rank / part.weight).label("vt"))
            .where(r.c.batch_id == part.batch_id, r.c.status == RequestStatus.QUEUED)
            .where(r.c.due_at <= now)
            .order_by(r.c.due_at)
            .limit(part.candidates)
        )
        if which is not None:
            branch = branch.where(which)
        inner = branch.subquery()  # SQLite takes a LIMIT inside a compound only in a subquery
        branches.append(select(inner.c.id, inner.c.vt))
    # Materialized: worked out once, never re-run inside a join (PostgreSQL would, with a
    # nested loop, where its statistics are stale).
    return union_all(*branches).cte("ranked").prefix_with("MATERIALIZED", dialect="postgresql")


def _due_in_order(
    now: datetime,
    which: ColumnElement[bool] | None,
    batch_id: str | None,
    *,
    excluded: Collection[str],
) -> Select[tuple[int]]:
    """Due queued rows (matching ``which``, of ``batch_id`` if given, of no batch in
    ``excluded``) oldest first: the second pick, when the fair one found its rows taken."""
    due = select(r.c.id).where(r.c.status == RequestStatus.QUEUED, r.c.due_at <= now)
    for condition in (
        which,
        None if batch_id is None else r.c.batch_id == batch_id,
        r.c.batch_id.not_in(list(excluded)) if excluded else None,
    ):
        if condition is not None:
            due = due.where(condition)
    return due.order_by(r.c.due_at)


def _claim_submits(
    conn: Connection,
    now: datetime,
    limit: int,
    lease_seconds: float,
    picked: Select[tuple[int]],
    worker_id: str | None,
) -> list[SubmitClaim]:
    """Lock the first ``limit`` rows ``picked`` lists that no other claim holds (of running
    batches, still queued and due) and mark them ``submitting`` for ``worker_id``.

    Status and due time are checked here, beside the lock, not only where ``picked`` chose
    them: PostgreSQL rechecks a locked row's new version against these conditions alone, and
    another worker may have claimed, answered and requeued it for later since ``picked`` read
    it."""
    due_rows = (
        picked.join(b, b.c.id == r.c.batch_id)
        .where(r.c.status == RequestStatus.QUEUED, r.c.due_at <= now)
        .where(b.c.status == BatchStatus.RUNNING)
        .limit(limit)
        .with_for_update(skip_locked=True, of=r)
        .cte("due")
    )
    stmt = (
        update(r)
        .where(r.c.id == due_rows.c.id)
        .values(
            status=RequestStatus.SUBMITTING,
            attempts=r.c.attempts + 1,
            due_at=now + timedelta(seconds=lease_seconds),
            lease_token=r.c.lease_token + 1,
            worker_id=worker_id,
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
    worker_id: str | None = None,
) -> list[PollClaim]:
    """Claim up to ``limit`` submitted rows due a poll (of one batch, if given) for
    ``worker_id``; pushing ``due_at`` out is the lease."""
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
        .values(
            due_at=now + timedelta(seconds=lease_seconds),
            lease_token=r.c.lease_token + 1,
            worker_id=worker_id,
        )
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
