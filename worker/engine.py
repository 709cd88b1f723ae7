"""The engine: claim due rows in chunks, call the provider concurrently, write the outcomes.

Used both by Celery tasks (distributed) and by ``chatbatch run`` (in-process); only the transport
of "go look" messages differs.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy import Engine as DbEngine
from sqlalchemy.exc import DBAPIError

from chatbatch import queries
from chatbatch.db import db_now, is_transient
from chatbatch.outcomes import Outcome
from chatbatch.settings import Settings
from chatbatch.states import (
    Policy,
    RequestStatus,
    RowView,
    Transition,
    after_poll,
    after_submit,
)
from worker.provider import Provider

log = logging.getLogger("chatbatch.engine")
T = TypeVar("T")

WRITE_RETRIES = 8


@dataclass
class DbClock:
    """The database's time at claim, advanced by the local monotonic clock (no extra queries)."""

    anchor: datetime
    started: float = field(default_factory=time.monotonic)

    def now(self) -> datetime:
        return self.anchor + timedelta(seconds=time.monotonic() - self.started)


class SubmitBudget:
    """How many more rows this process may hold as ``submitting``: at most its HTTP concurrency,
    across all its task threads, so a worker lost mid-chunk leaves at most that many possible
    duplicates."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._lock = threading.Lock()

    def take(self, wanted: int) -> int:
        with self._lock:
            granted = min(wanted, self._free)
            self._free -= granted
            return granted

    def give_back(self, count: int) -> None:
        with self._lock:
            self._free += count


class Engine:
    """Drives due work for every running batch in the database.

    Each step is one transaction claiming a chunk (due polls, and as many submissions as may be
    in flight), the chunk's HTTP calls all at once on the provider's event loop, and one
    transaction writing every outcome: two commits per chunk, whatever its size.
    """

    def __init__(
        self,
        *,
        db: DbEngine,
        provider: Provider,
        settings: Settings,
    ) -> None:
        self._db = db
        self._provider = provider
        self._settings = settings
        self.policy = Policy.from_settings(settings)
        self._submit_budget = SubmitBudget(settings.concurrency)
        self._rng = random.Random()

    @property
    def chunk_size(self) -> int:
        return self._settings.chunk_size

    def housekeeping(self) -> list[str]:
        """Requeue lost submissions, expire overdue results, settle cancellations, close finished
        batches."""
        with self._db.begin() as conn:
            now = db_now(conn)
            recovered = queries.recover_expired_leases(conn, now=now, policy=self.policy)
            expired = queries.expire_overdue(conn, now=now)
            cancelled = queries.cancel_leftovers(conn, now=now)
            finished = queries.finish_batches(conn, now=now)
        if recovered:
            log.warning("requeued %d request(s) whose worker was lost while submitting", recovered)
        if expired:
            log.warning("%d request(s) expired before their result was fetched", expired)
        if cancelled:
            log.info("%d request(s) of cancelled batches marked cancelled", cancelled)
        for batch_id in finished:
            log.info("batch %s finished", batch_id)
        return finished

    def drain(self, budget_seconds: float) -> int:
        """Work due chunks until none is due or the budget is spent; returns how many requests
        were handled."""
        started = time.monotonic()
        handled = 0
        while time.monotonic() - started < budget_seconds:
            step = self.step()
            handled += step
            if step == 0:
                break
        return handled

    def step(self) -> int:
        """Claim, call and record one chunk; returns how many requests it held."""
        submit_slots = self._submit_budget.take(min(self.chunk_size, self._settings.concurrency))
        try:
            with self._db.begin() as conn:
                clock = DbClock(db_now(conn))
                lease = self._settings.lease_seconds
                polls = queries.claim_for_poll(
                    conn, now=clock.anchor, limit=self.chunk_size, lease_seconds=lease
                )
                submits = (
                    queries.claim_for_submit(
                        conn, now=clock.anchor, limit=submit_slots, lease_seconds=lease
                    )
                    if submit_slots
                    else []
                )
            if polls or submits:
                self._call_and_record(submits, polls, clock)
        finally:
            self._submit_budget.give_back(submit_slots)
        return len(polls) + len(submits)

    def close(self) -> None:
        self._provider.close()

    def _call_and_record(
        self, submits: list[queries.SubmitClaim], polls: list[queries.PollClaim], clock: DbClock
    ) -> None:
        submitted, polled = self._provider.exchange(
            [claim.body for claim in submits], [claim.remote_id for claim in polls]
        )
        now = clock.now()
        writes = []
        for sub, outcome in zip(submits, submitted, strict=True):
            view = RowView(status=RequestStatus.SUBMITTING, attempts=sub.attempts)
            transition = after_submit(view, outcome, now=now, policy=self.policy, rng=self._rng)
            self._log_outcome(sub.id, outcome, transition)
            writes.append(
                queries.Write(
                    sub.id, sub.batch_id, RequestStatus.SUBMITTING, sub.lease_token, transition
                )
            )
        for poll, outcome in zip(polls, polled, strict=True):
            transition = after_poll(
                poll.view(), outcome, now=now, policy=self.policy, rng=self._rng
            )
            self._log_outcome(poll.id, outcome, transition)
            writes.append(
                queries.Write(
                    poll.id, poll.batch_id, RequestStatus.SUBMITTED, poll.lease_token, transition
                )
            )
        self._write(writes)

    def _write(self, writes: list[queries.Write]) -> None:
        """Record a chunk's outcomes as soon as they land; retried through a database restart."""
        try:
            applied = self._with_retries(lambda conn: queries.apply_transitions(conn, writes))
        except DBAPIError:
            lost = [
                (w.request_id, w.transition.changes["remote_id"])
                for w in writes
                if "remote_id" in w.transition.changes
            ]
            log.error(
                "could not record %d outcome(s): database unavailable; accepted tasks "
                "(request, remote id): %s",
                len(writes),
                lost,
            )
            raise
        if applied < len(writes):
            log.info(
                "%d stale write(s) ignored (another worker owns those rows now)",
                len(writes) - applied,
            )

    def _with_retries(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a transaction, retrying when the connection was lost (a DB restart)."""
        delay = 0.2
        for attempt in range(WRITE_RETRIES):
            try:
                with self._db.begin() as conn:
                    return fn(conn)
            except DBAPIError as exc:
                if not is_transient(exc) or attempt == WRITE_RETRIES - 1:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def _log_outcome(self, request_id: int, outcome: Outcome, transition: Transition) -> None:
        if transition.log:
            log.warning("request %s: %s", request_id, transition.log)
        if transition.pause_batch:
            log.error("pausing batch: %s", transition.pause_batch)
        if transition.increment_ambiguous:
            log.warning(
                "request %s: submission may have reached the provider: %s", request_id, outcome
            )
