"""Operator commands on a batch: cancel, resume, delete (retry: ``operations.retry``). Each is one
transaction that first locks the batch row, so two operators (or one run twice) never
interleave, and each is idempotent."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, func, select, update
from sqlalchemy import delete as delete_rows

from chatbatch.errors import ChatbatchError
from chatbatch.operations.cost_caps import COST_PAUSE
from chatbatch.rules.states import BatchStatus, RequestStatus
from chatbatch.store import reads, sweeps
from chatbatch.store.db import db_now
from chatbatch.store.models import archived_requests_table as archived
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import past_results_table as p
from chatbatch.store.models import requests_table as r


@dataclass(frozen=True)
class CommandResult:
    """What a command did, for the CLI to say: the batch, its status now, and a sentence."""

    name: str
    status: str
    changed: int
    message: str


def lock_batch(conn: Connection, ref: str, *, archived_ok: bool = False) -> Row[Any]:
    """The batch by id or name, locked for the rest of the transaction (PostgreSQL). An
    archived batch is read-only: refused unless ``archived_ok``."""
    batch_id = reads.resolve_batch(conn, ref).id
    batch = conn.execute(select(b).where(b.c.id == batch_id).with_for_update()).one()
    if batch.archived_at is not None and not archived_ok:
        raise ChatbatchError(
            f"{batch.name} is archived; `chatbatch unarchive {batch.name}` first to change it"
        )
    return batch


def cancel(conn: Connection, ref: str, *, now: datetime, discard: bool) -> CommandResult:
    """Stop submitting. Queued requests become cancelled at once; submitted ones are still fetched
    (they are paid for) unless ``discard``. In-flight submissions land and are then settled by the
    workers' housekeeping (``sweeps.cancel_leftovers``)."""
    batch = lock_batch(conn, ref)
    current = BatchStatus(batch.status)
    if current in (BatchStatus.COMPLETED, BatchStatus.CANCELLED):
        return CommandResult(batch.name, current, 0, f"nothing to cancel: the batch is {current}")
    if current == BatchStatus.CANCELLING and not discard:
        in_flight = _count(conn, batch.id, (RequestStatus.SUBMITTING, RequestStatus.SUBMITTED))
        return CommandResult(
            batch.name,
            current,
            0,
            f"already cancelling: {in_flight} submitted request(s) are still being fetched "
            "(add --discard to stop fetching them)",
        )
    target = BatchStatus.CANCELLED if discard else BatchStatus.CANCELLING
    conn.execute(update(b).where(b.c.id == batch.id).values(status=target, pause_reason=None))
    changed = sweeps.cancel_leftovers(conn, now=now)
    sweeps.finish_batches(conn, now=now)
    status = reads.resolve_batch(conn, batch.id).status
    in_flight = _count(conn, batch.id, (RequestStatus.SUBMITTING, RequestStatus.SUBMITTED))
    message = f"cancelled {changed} request(s)"
    if in_flight:
        message += (
            f"; {in_flight} already submitted request(s) will be fetched when their results are "
            "ready (workers must be running)"
            if not discard
            else f"; {in_flight} request(s) in flight right now will be marked cancelled"
        )
    return CommandResult(batch.name, status, changed, message)


def resume(conn: Connection, ref: str, *, max_cost: Decimal | None = None) -> CommandResult:
    """Let a paused batch run again. ``max_cost`` sets a new cost cap; without it, a batch that
    its cost cap paused runs on uncapped (resuming it is the user's decision to spend more)."""
    batch = lock_batch(conn, ref)
    if batch.status != BatchStatus.PAUSED:
        if max_cost is None:
            return CommandResult(
                batch.name, batch.status, 0, f"not paused (the batch is {batch.status})"
            )
        conn.execute(update(b).where(b.c.id == batch.id).values(max_cost=str(max_cost)))
        return CommandResult(batch.name, batch.status, 1, f"cost limit set to {max_cost}")
    changes: dict[str, object] = {
        "status": BatchStatus.RUNNING,
        "pause_reason": None,
        "progressed_at": db_now(conn),  # its time without progress starts now, not at the pause
    }
    message = "resumed"
    if max_cost is not None:
        if not batch.prices:
            raise ChatbatchError(
                f"{batch.name} has no price table to measure a cost limit with; "
                "load it with --prices"
            )
        changes["max_cost"] = str(max_cost)
        message = f"resumed with a cost limit of {max_cost}"
    elif batch.max_cost is not None and (batch.pause_reason or "").startswith(COST_PAUSE):
        changes["max_cost"] = None
        message = "resumed without a cost limit"
    conn.execute(update(b).where(b.c.id == batch.id).values(**changes))
    return CommandResult(batch.name, BatchStatus.RUNNING, 1, message)


IN_FLIGHT = (RequestStatus.SUBMITTING, RequestStatus.SUBMITTED)


def delete(conn: Connection, ref: str) -> CommandResult:
    """Delete a batch with its requests and their history. Refused while it may still be
    worked (running or cancelling) or has requests in flight: their results are paid for."""
    batch = lock_batch(conn, ref, archived_ok=True)
    if batch.status == BatchStatus.RUNNING:
        raise ChatbatchError(
            f"{batch.name} is running; cancel it first (`chatbatch cancel {batch.name}`)"
        )
    if batch.status == BatchStatus.CANCELLING:
        raise ChatbatchError(
            f"{batch.name} is cancelling: its submitted requests are still being fetched; let "
            f"them land (`chatbatch process {batch.name}`, or workers) or drop them with "
            f"`chatbatch cancel {batch.name} --discard`"
        )
    in_flight = _count(conn, batch.id, IN_FLIGHT)
    if in_flight:
        raise ChatbatchError(
            f"{batch.name} has {in_flight} request(s) in flight whose results are paid for; "
            f"`chatbatch cancel {batch.name} --discard` first if you do not want them"
        )
    conn.execute(delete_rows(p).where(p.c.batch_id == batch.id))
    deleted = sum(
        conn.execute(delete_rows(table).where(table.c.batch_id == batch.id)).rowcount
        for table in (r, archived)
    )
    conn.execute(delete_rows(b).where(b.c.id == batch.id))
    return CommandResult(batch.name, "deleted", deleted, f"deleted with {deleted} request(s)")


def _count(conn: Connection, batch_id: str, statuses: Collection[RequestStatus]) -> int:
    return conn.execute(
        select(func.count()).where(r.c.batch_id == batch_id, r.c.status.in_(list(statuses)))
    ).scalar_one()
