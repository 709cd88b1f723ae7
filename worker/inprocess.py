"""Run one batch to the end inside this process (the embedded mode of ``chatbatch run``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from chatbatch.rules.states import BatchStatus
from chatbatch.store import reads
from chatbatch.store.db import db_now, get_engine
from worker.engine import Engine

IDLE_SLEEP_MAX = 1.0
IDLE_SLEEP_MIN = 0.02


STOPPED = "stopped"


def run_batch(
    engine: Engine, batch_id: str, *, on_progress: Callable[[], None] | None = None
) -> str:
    """Drive the batch until it is completed, paused or cancelled (a cancelling batch still
    fetches what it paid for), or the engine is stopped; returns that status, or ``STOPPED``."""
    while True:
        engine.housekeeping()
        handled = engine.drain(budget_seconds=1.0)
        if on_progress:
            on_progress()
        if engine.stopping:
            return STOPPED
        with get_engine().begin() as conn:
            status = reads.resolve_batch(conn, batch_id).status
            if status not in (BatchStatus.RUNNING, BatchStatus.CANCELLING):
                return str(status)
            wake = reads.next_due_at(conn, batch_id)
            now = db_now(conn)
        if not handled:
            time.sleep(_idle_sleep(wake, now))


def _idle_sleep(wake: datetime | None, now: datetime) -> float:
    if wake is None:
        return IDLE_SLEEP_MIN
    return min(IDLE_SLEEP_MAX, max(IDLE_SLEEP_MIN, (wake - now).total_seconds()))
