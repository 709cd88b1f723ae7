"""Every SQL statement the engine runs: claims, guarded transitions, recovery, summaries.

Functions take a connection and never commit; the caller owns the unit of work.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    TextClause,
    bindparam,
    case,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from chatbatch.errors import NotFoundError
from chatbatch.rules.completions import USAGE_COLUMNS
from chatbatch.rules.states import (
    ACTIVE_STATUSES,
    ANSWERED_STATUSES,
    AnswerCheck,
    BatchStatus,
    Policy,
    RequestStatus,
    RowView,
    Transition,
    after_lease_expired,
    expired_transition,
)
from chatbatch.store.db import masked_url
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import past_results_table as past_results
from chatbatch.store.models import requests_table as r

POLLABLE_BATCHES = (BatchStatus.RUNNING, BatchStatus.PAUSED, BatchStatus.CANCELLING)
CANCELLED_BEFORE_SUBMISSION = "cancelled before it was submitted"
CANCELLED_UNFETCHED = "cancelled with --discard; the result was not fetched (remote_id kept)"


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


@dataclass(frozen=True)
class Write:
    """A transition to apply to one claimed row, guarded by the status and lease we hold."""

    request_id: int
    batch_id: str
    expected: RequestStatus
    lease_token: int
    transition: Transition


def apply_transitions(conn: Connection, writes: Sequence[Write]) -> int:
    """Apply each write only where its row is still as claimed (else it is a stale write and
    changes nothing); returns how many applied. Writes of the same shape go out as one
    statement on PostgreSQL (an ``executemany`` elsewhere), so a chunk costs a round trip or
    two, not one per row.
    Batches are paused as the transitions ask, whether or not their row write applied: an
    account error is true of the whole batch. A transition with ``archive`` first moves the
    row's outcome to ``past_results``, under the same guard, in the same transaction."""
    shapes: dict[_Shape, list[dict[str, Any]]] = defaultdict(list)
    for write in writes:
        shape, params = _write_params(write)
        shapes[shape].append(params)
    applied = 0
    for (names, ambiguous, archived), rows in shapes.items():
        if archived:
            _archive_outcomes(conn, archived, rows)
        if conn.dialect.name == "postgresql":
            applied += _update_from_arrays(conn, names, ambiguous, rows)
        else:
            applied += _update_each(conn, names, ambiguous, rows)
    pauses = {w.batch_id: w.transition.pause_batch for w in writes if w.transition.pause_batch}
    for batch_id, reason in pauses.items():
        pause_batch(conn, batch_id, reason)
    return applied


# What decides a write's statement: the columns it sets, whether it counts a possible
# duplicate, and the columns of the outcome it archives first (none: nothing archived).
_Shape = tuple[tuple[str, ...], bool, tuple[str, ...]]


def _write_params(write: Write) -> tuple[_Shape, dict[str, Any]]:
    """The shape of ``write`` and its bind parameters (``w_`` guard, ``v_`` new values,
    ``a_`` archived outcome)."""
    transition = write.transition
    params = {f"v_{name}": value for name, value in transition.changes.items()}
    params.update(
        w_id=write.request_id,
        w_expected=write.expected.value,
        w_token=write.lease_token,
        v_status=transition.status.value,
        v_due_at=transition.due_at,
    )
    archived: tuple[str, ...] = ()
    if transition.archive:
        params.update({f"a_{name}": value for name, value in transition.archive.items()})
        archived = tuple(sorted(transition.archive))
    return (tuple(sorted(transition.changes)), transition.increment_ambiguous, archived), params


def _update_each(
    conn: Connection, names: tuple[str, ...], ambiguous: bool, rows: list[dict[str, Any]]
) -> int:
    """The guarded update of writes of one shape as an ``executemany`` (SQLite)."""
    values: dict[str, Any] = {name: bindparam(f"v_{name}") for name in names}
    values.update(
        status=bindparam("v_status"),
        due_at=bindparam("v_due_at"),
        lease_token=r.c.lease_token + 1,
    )
    if ambiguous:
        values["ambiguous_submits"] = r.c.ambiguous_submits + 1
    stmt = (
        update(r)
        .where(
            r.c.id == bindparam("w_id"),
            r.c.status == bindparam("w_expected"),
            r.c.lease_token == bindparam("w_token"),
        )
        .values(values)
    )
    return conn.execute(stmt, rows).rowcount


_ARRAY_WRITE_KEYS = ("w_id", "w_expected", "w_token", "v_status", "v_due_at")


@lru_cache(maxsize=64)
def _update_from_arrays_sql(names: tuple[str, ...], ambiguous: bool) -> TextClause:
    """``UPDATE requests ... FROM unnest(arrays)`` for writes of one shape: a single statement
    whose text depends only on the shape, so PostgreSQL prepares it once. Not a pipeline of
    statements: a worker frozen mid-pipeline keeps its row locks with a session PostgreSQL
    still counts as active, out of reach of ``idle_in_transaction_session_timeout``."""
    dialect = postgresql.dialect()
    targets = ["id", "status", "lease_token", "status", "due_at", *names]
    keys = [*_ARRAY_WRITE_KEYS, *(f"v_{name}" for name in names)]
    arrays = ", ".join(
        f"CAST(:{key} AS {r.c[target].type.compile(dialect=dialect)}[])"
        for key, target in zip(keys, targets, strict=True)
    )
    sets = [f"{name} = w.v_{name}" for name in names]
    sets += ["status = w.v_status", "due_at = w.v_due_at", "lease_token = r.lease_token + 1"]
    if ambiguous:
        sets.append("ambiguous_submits = r.ambiguous_submits + 1")
    return text(
        f"UPDATE requests AS r SET {', '.join(sets)} "
        f"FROM unnest({arrays}) AS w({', '.join(keys)}) "
        "WHERE r.id = w.w_id AND r.status = w.w_expected AND r.lease_token = w.w_token"
    )


def _update_from_arrays(
    conn: Connection, names: tuple[str, ...], ambiguous: bool, rows: list[dict[str, Any]]
) -> int:
    keys = [*_ARRAY_WRITE_KEYS, *(f"v_{name}" for name in names)]
    arrays = {key: [row[key] for row in rows] for key in keys}
    return conn.execute(_update_from_arrays_sql(names, ambiguous), arrays).rowcount


# The archived outcome's columns that its request row holds; the others come with the write.
_ARCHIVED_FROM_ROW = {
    "request_id": r.c.id,
    "batch_id": r.c.batch_id,
    "attempts": r.c.attempts,
    "remote_id": r.c.remote_id,
    "submitted_at": r.c.submitted_at,
}


def _archive_outcomes(conn: Connection, names: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Copy the outcome of each write's row to ``past_results``, only where the row is still
    as claimed, locking it so the guarded update that follows applies to exactly these rows."""
    if conn.dialect.name == "postgresql":
        keys = [*_ARRAY_WRITE_KEYS[:3], *(f"a_{name}" for name in names)]
        arrays = {key: [row[key] for row in rows] for key in keys}
        conn.execute(_archive_from_arrays_sql(names), arrays)
        return
    picked = select(
        *_ARCHIVED_FROM_ROW.values(),
        *(bindparam(f"a_{name}", type_=past_results.c[name].type) for name in names),
    ).where(
        r.c.id == bindparam("w_id"),
        r.c.status == bindparam("w_expected"),
        r.c.lease_token == bindparam("w_token"),
    )
    conn.execute(insert(past_results).from_select([*_ARCHIVED_FROM_ROW, *names], picked), rows)


@lru_cache(maxsize=16)
def _archive_from_arrays_sql(names: tuple[str, ...]) -> TextClause:
    """``INSERT INTO past_results ... SELECT ... FROM requests JOIN unnest(arrays)`` for
    archives of one shape, locking the matched rows (``FOR UPDATE``) until the update."""
    dialect = postgresql.dialect()
    columns = [
        ("w_id", r.c.id),
        ("w_expected", r.c.status),
        ("w_token", r.c.lease_token),
        *((f"a_{name}", past_results.c[name]) for name in names),
    ]
    arrays = ", ".join(
        f"CAST(:{key} AS {column.type.compile(dialect=dialect)}[])" for key, column in columns
    )
    targets = [*_ARCHIVED_FROM_ROW, *names]
    picks = [f"r.{column.name}" for column in _ARCHIVED_FROM_ROW.values()]
    picks += [f"w.a_{name}" for name in names]
    return text(
        f"INSERT INTO past_results ({', '.join(targets)}) SELECT {', '.join(picks)} "
        f"FROM requests AS r JOIN unnest({arrays}) AS w({', '.join(k for k, _ in columns)}) "
        "ON r.id = w.w_id AND r.status = w.w_expected AND r.lease_token = w.w_token "
        "FOR UPDATE OF r"
    )


def apply_transition(
    conn: Connection,
    request_id: int,
    *,
    batch_id: str,
    expected: RequestStatus,
    lease_token: int,
    transition: Transition,
) -> bool:
    """Write one ``transition`` only if the row is still as we claimed it; False: a stale write."""
    write = Write(request_id, batch_id, expected, lease_token, transition)
    return apply_transitions(conn, [write]) == 1


def pause_batch(conn: Connection, batch_id: str, reason: str) -> bool:
    """Stop claiming a running batch's requests, saying why; True if this call paused it."""
    result = conn.execute(
        update(b)
        .where(b.c.id == batch_id, b.c.status == BatchStatus.RUNNING)
        .values(status=BatchStatus.PAUSED, pause_reason=reason[:2000])
    )
    return result.rowcount == 1


def recover_expired_leases(
    conn: Connection, *, now: datetime, policy: Policy, limit: int = 1000
) -> int:
    """Requeue ``submitting`` rows whose worker vanished (counting a possible duplicate each)."""
    rows = conn.execute(
        select(r.c.id, r.c.batch_id, r.c.lease_token, r.c.attempts)
        .where(r.c.status == RequestStatus.SUBMITTING, r.c.due_at < now)
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
                error_code="cancelled",
                error_message=message,
            )
        )
        total += result.rowcount
    return total


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


def list_batches(conn: Connection) -> Sequence[Row[Any]]:
    """All batches, newest first."""
    return conn.execute(select(b).order_by(b.c.created_at.desc(), b.c.id)).all()


def status_counts(conn: Connection, batch_id: str) -> dict[str, int]:
    """Requests per status, every status present (zeros included)."""
    counts = {status.value: 0 for status in RequestStatus}
    rows = conn.execute(
        select(r.c.status, func.count()).where(r.c.batch_id == batch_id).group_by(r.c.status)
    )
    for status, count in rows:
        counts[status] = count
    return counts


def schema_counts(conn: Connection, batch_id: str) -> dict[str, int]:
    """How many answered requests follow the batch's schema and how many do not, and how many
    invalid answers were asked again."""
    answered = r.c.status.in_(ANSWERED_STATUSES)
    valid, invalid, retried = conn.execute(
        select(
            func.count().filter(answered, r.c.schema_valid.is_(True)),
            func.count().filter(answered, r.c.schema_valid.is_(False)),
            func.coalesce(func.sum(r.c.invalid_retries), 0),
        ).where(r.c.batch_id == batch_id)
    ).one()
    return {"valid": int(valid), "invalid": int(invalid), "retried": int(retried)}


def usage_totals(conn: Connection, batch_id: str) -> dict[str, int]:
    """Summed usage of every provider answer the batch got, including outcomes that a retry
    replaced, how many of those answers had usage clamped into range, and possible duplicates;
    exact integers."""
    totals = dict.fromkeys((*USAGE_COLUMNS, "usage_clamped"), 0)
    for table in (r, past_results):
        sums = [func.coalesce(func.sum(table.c[name]), 0) for name in USAGE_COLUMNS]
        clamped = func.count().filter(table.c.usage_clamped.is_(True))
        row = conn.execute(select(*sums, clamped).where(table.c.batch_id == batch_id)).one()
        for name, value in zip((*USAGE_COLUMNS, "usage_clamped"), row, strict=True):
            totals[name] += int(value)
    duplicates = select(func.coalesce(func.sum(r.c.ambiguous_submits), 0))
    totals["possible_duplicates"] = int(
        conn.execute(duplicates.where(r.c.batch_id == batch_id)).scalar_one()
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
