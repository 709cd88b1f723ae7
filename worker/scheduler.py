"""The scheduling duties every ``chatbatch worker`` runs in a background thread.

Each tick: requeue lost submissions, expire overdue results, close finished batches, then count
due rows and top the queue up with enough "go look" messages. Ticks from several workers may
overlap safely: every write is a guarded update and every claim uses SKIP LOCKED.
"""

from __future__ import annotations

import logging
import math
import threading

from celery import Celery

from chatbatch.settings import Settings
from chatbatch.store import claims
from chatbatch.store.db import db_now, get_engine
from worker.runtime import process_engine
from worker.tasks import drain

log = logging.getLogger("chatbatch.scheduler")


class Ticker(threading.Thread):
    """A daemon thread that ticks until ``stop()``."""

    def __init__(self, app: Celery, settings: Settings, *, slots: int) -> None:
        super().__init__(name="chatbatch-ticker", daemon=True)
        self._app = app
        self._settings = settings
        self._max_queued = max(2, 2 * slots)
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        while not self._stopped.wait(self._settings.tick_seconds):
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed; retrying next tick")

    def tick(self) -> int:
        """One round of housekeeping and wake-ups; returns the messages sent."""
        process_engine().housekeeping()
        chunk = self._settings.chunk_size
        with get_engine().begin() as conn:
            due = claims.count_due(conn, now=db_now(conn), cap=chunk * self._max_queued)
        wanted = min(math.ceil(due / chunk), self._max_queued)
        missing = wanted - self._queue_depth() if wanted else 0
        for _ in range(missing):
            drain.apply_async(queue=self._settings.queue)
        return max(0, missing)

    def _queue_depth(self) -> int:
        with self._app.connection_for_write() as conn:
            return int(conn.default_channel.queue_declare(queue=self._settings.queue).message_count)
