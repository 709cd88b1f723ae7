"""Archive a finished batch: its requests leave the hot ``requests`` table whole for
``archived_requests``, where exports, reports and status still read them (``all_requests``);
unarchive brings them back to be retried. Each is one transaction with the batch row locked, so
a reader sees the requests in one table or the other, never both or neither."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Table, delete, func, insert, select, update

from chatbatch.errors import ChatbatchError
from chatbatch.operations.controls import CommandResult, lock_batch
from chatbatch.rules.states import ACTIVE_STATUSES, BatchStatus
from chatbatch.store.models import archived_requests_table as archived
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import requests_table as r

ARCHIVABLE = (BatchStatus.COMPLETED, BatchStatus.CANCELLED)


def archive(conn: Connection, ref: str, *, now: datetime) -> CommandResult:
    """Move a completed or cancelled batch's requests to the archive; idempotent. Anything that
    may still be worked (running, paused, cancelling, a request in flight) is refused."""
    batch = lock_batch(conn, ref, archived_ok=True)
    if batch.archived_at is not None:
        return CommandResult(batch.name, batch.status, 0, "already archived")
    active = conn.execute(
        select(func.count()).where(r.c.batch_id == batch.id, r.c.status.in_(ACTIVE_STATUSES))
    ).scalar_one()
    if batch.status not in ARCHIVABLE or active:
        raise ChatbatchError(
            f"{batch.name} is {batch.status} with {active} request(s) not finished: only a "
            f"completed or cancelled batch can be archived (`chatbatch cancel {batch.name}` "
            "first to stop it)"
        )
    moved = _move(conn, batch.id, source=r, target=archived)
    conn.execute(update(b).where(b.c.id == batch.id).values(archived_at=now))
    return CommandResult(batch.name, batch.status, moved, f"archived {moved} request(s)")


def unarchive(conn: Connection, ref: str) -> CommandResult:
    """Move an archived batch's requests back, so it can be retried; idempotent."""
    batch = lock_batch(conn, ref, archived_ok=True)
    if batch.archived_at is None:
        return CommandResult(batch.name, batch.status, 0, "not archived")
    moved = _move(conn, batch.id, source=archived, target=r)
    conn.execute(update(b).where(b.c.id == batch.id).values(archived_at=None))
    return CommandResult(batch.name, batch.status, moved, f"unarchived {moved} request(s)")


def archivable_before(conn: Connection, cutoff: datetime) -> list[str]:
    """Ids of the batches not archived yet that finished (completed or cancelled) before
    ``cutoff``, oldest first: what ``archive --older-than`` takes."""
    query = (
        select(b.c.id)
        .where(
            b.c.archived_at.is_(None),
            b.c.status.in_(ARCHIVABLE),
            func.coalesce(b.c.finished_at, b.c.created_at) < cutoff,
        )
        .order_by(b.c.finished_at, b.c.id)
    )
    return list(conn.execute(query).scalars())


def _move(conn: Connection, batch_id: str, *, source: Table, target: Table) -> int:
    """Copy the batch's rows from ``source`` to ``target`` column by column, then delete them
    from ``source``; how many moved."""
    names = [column.name for column in source.columns]
    rows = select(*(source.c[name] for name in names)).where(source.c.batch_id == batch_id)
    conn.execute(insert(target).from_select(names, rows))
    return conn.execute(delete(source).where(source.c.batch_id == batch_id)).rowcount
