"""The guarded writer: each outcome applied only where its row is still as claimed (status and
lease token), ending the claim (``worker_id`` cleared), batched per shape (``UPDATE … FROM
unnest(arrays)`` on PostgreSQL).

Functions take a connection and never commit; the caller owns the unit of work.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Connection,
    TextClause,
    bindparam,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql

from chatbatch.rules.states import (
    BatchStatus,
    RequestStatus,
    Transition,
)
from chatbatch.store import notifications
from chatbatch.store.dialect import is_postgresql
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import past_results_table as past_results
from chatbatch.store.models import requests_table as r


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
        if is_postgresql(conn):
            applied += _update_from_arrays(conn, names, ambiguous, rows)
        else:
            applied += _update_each(conn, names, ambiguous, rows)
    pauses = {w.batch_id: w.transition.pause_batch for w in writes if w.transition.pause_batch}
    for batch_id, reason in pauses.items():
        pause_batch(conn, batch_id, reason)
    _mark_progress(conn, writes)
    return applied


PROGRESS_STEP = timedelta(seconds=10)  # a batch's progressed_at moves at most this often


def _mark_progress(conn: Connection, writes: Sequence[Write]) -> None:
    """Note when each batch last had a request given a task id or an answer (not more often
    than ``PROGRESS_STEP``, so a busy batch's row is rarely written)."""
    latest: dict[str, datetime] = {}
    for write in writes:
        changes = write.transition.changes
        at = changes.get("completed_at") or changes.get("submitted_at")
        if isinstance(at, datetime) and at > latest.get(write.batch_id, at - PROGRESS_STEP):
            latest[write.batch_id] = at
    for batch_id, at in latest.items():
        stale = b.c.progressed_at.is_(None) | (b.c.progressed_at < at - PROGRESS_STEP)
        conn.execute(update(b).where(b.c.id == batch_id, stale).values(progressed_at=at))


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
        worker_id=None,
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
    sets.append("worker_id = NULL")  # the claim is over
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
    "provider": r.c.provider,
    "remote_id": r.c.remote_id,
    "submitted_at": r.c.submitted_at,
}


def _archive_outcomes(conn: Connection, names: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Copy the outcome of each write's row to ``past_results``, only where the row is still
    as claimed, locking it so the guarded update that follows applies to exactly these rows."""
    if is_postgresql(conn):
        keys = [*_ARRAY_WRITE_KEYS[:3], *(f"a_{name}" for name in names)]
        arrays = {key: [row[key] for row in rows] for key in keys}
        conn.execute(_archive_from_arrays_sql(names), arrays)
        return
    from_row = _archived_from_row(names)
    picked = select(
        *from_row.values(),
        *(bindparam(f"a_{name}", type_=past_results.c[name].type) for name in names),
    ).where(
        r.c.id == bindparam("w_id"),
        r.c.status == bindparam("w_expected"),
        r.c.lease_token == bindparam("w_token"),
    )
    conn.execute(insert(past_results).from_select([*from_row, *names], picked), rows)


def _archived_from_row(names: tuple[str, ...]) -> dict[str, Any]:
    """The archived columns taken from the request row: those the write does not give."""
    return {name: column for name, column in _ARCHIVED_FROM_ROW.items() if name not in names}


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
    from_row = _archived_from_row(names)
    targets = [*from_row, *names]
    picks = [f"r.{column.name}" for column in from_row.values()]
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
    if result.rowcount != 1:
        return False
    notifications.record(conn, batch_id, notifications.PAUSED, detail=reason[:2000])
    return True
