"""Worker liveness: each worker process registers and beats; one whose beats stopped is lost.

A lost worker's claims are taken over by the next tick (``sweeps.recover_expired_leases`` and
``sweeps.release_lost_polls``) instead of after their lease, which stays as the backstop.
Functions take a connection and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, delete, func, insert, select, update
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from chatbatch.store.models import requests_table as r
from chatbatch.store.models import workers_table as w

MISSED_BEATS = 3  # a worker is lost once this many heartbeats in a row have not come
KEEP_STOPPED = timedelta(days=7)  # how long stopped and lost workers stay listed
VOUCH_AFTER = timedelta(seconds=1)  # a claim beats only if the last beat is older (few writes)


@dataclass(frozen=True)
class WorkerRow:
    """One worker as ``chatbatch workers`` lists it."""

    id: str
    host: str
    pid: int
    kind: str
    started_at: datetime
    beat_at: datetime
    stopped_at: datetime | None
    state: str  # live, lost or stopped
    in_flight: int

    def as_json(self) -> dict[str, Any]:
        """The worker object of ``workers --json`` and the dashboard's API."""
        return {
            "id": self.id,
            "state": self.state,
            "host": self.host,
            "pid": self.pid,
            "kind": self.kind,
            "started_at": self.started_at.isoformat(),
            "beat_at": self.beat_at.isoformat(),
            "stopped_at": None if self.stopped_at is None else self.stopped_at.isoformat(),
            "in_flight": self.in_flight,
        }


def register(
    conn: Connection, worker_id: str, *, host: str, pid: int, kind: str, now: datetime
) -> None:
    """Add this worker process, beating as of ``now``."""
    conn.execute(
        insert(w).values(
            id=worker_id, host=host[:255], pid=pid, kind=kind, started_at=now, beat_at=now
        )
    )


def beat(conn: Connection, worker_id: str, *, now: datetime) -> bool:
    """Record a heartbeat; False if the worker's row is gone (pruned: register again). A
    worker that was lost and beats again is live again: its old claims are already gone."""
    result = conn.execute(update(w).where(w.c.id == worker_id).values(beat_at=now, stopped_at=None))
    return result.rowcount == 1


def vouch(conn: Connection, worker_id: str, *, now: datetime) -> None:
    """Beat as part of a claim, in its transaction, if the last beat is over ``VOUCH_AFTER``
    old: a worker back from a partition claims before its heartbeat thread has got through,
    and a sweep must never take over rows claimed by a worker it still counts as lost."""
    conn.execute(
        update(w)
        .where(w.c.id == worker_id, w.c.beat_at < now - VOUCH_AFTER)
        .values(beat_at=now, stopped_at=None)
    )


def mark_stopped(conn: Connection, worker_id: str, *, now: datetime) -> None:
    """A clean stop: whatever the worker still holds is taken over at the next tick."""
    conn.execute(update(w).where(w.c.id == worker_id).values(stopped_at=now, beat_at=now))


def takeover_seconds(heartbeat_seconds: float, lease_seconds: float) -> float:
    """The soonest, in seconds after a claim began, that another worker may take its rows over:
    when its lease runs out, or when its worker has missed ``MISSED_BEATS`` beats after the one
    the claim vouched for (which may be up to ``VOUCH_AFTER`` old)."""
    by_heartbeat = heartbeat_seconds * MISSED_BEATS - VOUCH_AFTER.total_seconds()
    return max(0.0, min(lease_seconds, by_heartbeat))


def lost(now: datetime, heartbeat_seconds: float) -> ColumnElement[bool]:
    """Whether a worker's claims are free to take: it stopped, or missed ``MISSED_BEATS``."""
    stale = now - timedelta(seconds=heartbeat_seconds * MISSED_BEATS)
    return w.c.stopped_at.is_not(None) | (w.c.beat_at < stale)


def lost_worker_ids(now: datetime, heartbeat_seconds: float) -> Select[tuple[str]]:
    """The ids of the workers whose claims may be taken over."""
    return select(w.c.id).where(lost(now, heartbeat_seconds))


def list_workers(
    conn: Connection, *, now: datetime, heartbeat_seconds: float, since: datetime
) -> list[WorkerRow]:
    """Workers live now or heard from since ``since``, newest first, with what each holds."""
    held = _held().subquery()
    chosen = _with_state(held, now, heartbeat_seconds).outerjoin(held, held.c.worker_id == w.c.id)
    return _worker_rows(conn, chosen.where(w.c.beat_at >= since))


def batch_holders(
    conn: Connection, batch_id: str, *, now: datetime, heartbeat_seconds: float
) -> list[WorkerRow]:
    """The workers holding requests of one batch in flight now, with how many each holds."""
    held = _held().where(r.c.batch_id == batch_id).subquery()
    chosen = _with_state(held, now, heartbeat_seconds).join(held, held.c.worker_id == w.c.id)
    return _worker_rows(conn, chosen)


def _held() -> Select[tuple[str, int]]:
    """Requests held in flight per worker (from the partial index of held rows)."""
    return (
        select(r.c.worker_id, func.count().label("n"))
        .where(r.c.worker_id.is_not(None))
        .group_by(r.c.worker_id)
    )


def _with_state(held: Any, now: datetime, heartbeat_seconds: float) -> Select[Any]:
    """Every column of a worker, its state (live, lost, stopped) and what it holds."""
    state = case(
        (w.c.stopped_at.is_not(None), "stopped"),
        (lost(now, heartbeat_seconds), "lost"),
        else_="live",
    )
    return select(*w.c, state.label("state"), func.coalesce(held.c.n, 0).label("in_flight"))


def _worker_rows(conn: Connection, chosen: Select[Any]) -> list[WorkerRow]:
    rows = conn.execute(chosen.order_by(w.c.started_at.desc(), w.c.id))
    return [WorkerRow(**row._asdict()) for row in rows]


def prune(conn: Connection, *, now: datetime) -> int:
    """Forget workers not heard from for ``KEEP_STOPPED``."""
    return conn.execute(delete(w).where(w.c.beat_at < now - KEEP_STOPPED)).rowcount
