"""This worker process's heartbeat: registered in the database, a beat every few seconds, and a
stopped mark on a clean stop. Claims carry its id; once its beats stop, any other worker's next
tick takes its rows over (``chatbatch.store.liveness``), long before their lease runs out."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from sqlalchemy import Connection
from sqlalchemy import Engine as DbEngine

from chatbatch.store import liveness
from chatbatch.store.db import db_now

log = logging.getLogger("chatbatch.liveness")


class Heartbeat:
    """Registers this process as a worker and beats from a daemon thread until ``stop()``."""

    def __init__(self, db: DbEngine, *, kind: str, interval: float) -> None:
        self.worker_id = uuid.uuid4().hex
        self._db = db
        self._kind = kind
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, daemon=True)
        self._thread.name = "chatbatch-heartbeat"

    def start(self) -> None:
        """Register (failing here if the database is unreachable) and start beating."""
        with self._db.begin() as conn:
            self._register(conn)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and mark this worker stopped: what it still holds is free at once."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval + 1)
        try:
            with self._db.begin() as conn:
                liveness.mark_stopped(conn, self.worker_id, now=db_now(conn))
        except Exception:  # the database is gone: the beats stop, which says the same later
            log.warning("could not mark worker %s stopped", self.worker_id, exc_info=True)

    def _register(self, conn: Connection) -> None:
        liveness.register(
            conn,
            self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            kind=self._kind,
            now=db_now(conn),
        )

    def _beat_until_stopped(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._beat()
            except Exception:  # a missed beat; enough of them and our claims are taken over
                log.warning("heartbeat failed; trying again in %g s", self._interval, exc_info=True)

    def _beat(self) -> None:
        with self._db.begin() as conn:
            if not liveness.beat(conn, self.worker_id, now=db_now(conn)):
                self._register(conn)  # pruned while we were away
