"""The engine: claim due rows in chunks, call the provider concurrently, write each outcome.

Used both by Celery tasks (distributed) and by ``chatbatch run`` (in-process); only the transport
of "go look" messages differs.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
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
C = TypeVar("C", queries.SubmitClaim, queries.PollClaim)

WRITE_RETRIES = 8


@dataclass
class DbClock:
    """The database's time at claim, advanced by the local monotonic clock (no extra queries)."""

    anchor: datetime
    started: float = field(default_factory=time.monotonic)

    def now(self) -> datetime:
        return self.anchor + timedelta(seconds=time.monotonic() - self.started)


class Engine:
    """Drives due work for every running batch in the database."""

    def __init__(
        self,
        *,
        db: DbEngine,
        provider: Provider,
        settings: Settings,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self._db = db
        self._provider = provider
        self._settings = settings
        self.policy = Policy.from_settings(settings)
        self._executor = executor or ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="chatbatch-http"
        )
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
        """Work due chunks (polls first: results are already paid for) until none is due or the
        budget is spent; returns how many requests were handled."""
        started = time.monotonic()
        handled = 0
        while time.monotonic() - started < budget_seconds:
            step = self.poll_due() + self.submit_due()
            handled += step
            if step == 0:
                break
        return handled

    def submit_due(self) -> int:
        """Claim one chunk of queued requests and submit them concurrently."""
        return self._claim_and_run(queries.claim_for_submit, self._submit_one)

    def poll_due(self) -> int:
        """Claim one chunk of submitted requests whose poll is due and poll them concurrently."""
        return self._claim_and_run(queries.claim_for_poll, self._poll_one)

    def _claim_and_run(
        self, claim: Callable[..., list[C]], handle: Callable[[C, DbClock], None]
    ) -> int:
        """Commit a claim of one chunk, then handle its rows concurrently, outside the claim."""
        with self._db.begin() as conn:
            clock = DbClock(db_now(conn))
            claims = claim(
                conn,
                now=clock.anchor,
                limit=self.chunk_size,
                lease_seconds=self._settings.lease_seconds,
            )
        self._run_all([partial(handle, c, clock) for c in claims])
        return len(claims)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._provider.close()

    def _run_all(self, jobs: list[Callable[[], None]]) -> None:
        futures = [self._executor.submit(job) for job in jobs]
        for future in wait(futures).done:
            error = future.exception()
            if error is not None:
                log.error("request handling failed: %r", error)

    def _submit_one(self, claim: queries.SubmitClaim, clock: DbClock) -> None:
        def mark(conn: Connection) -> int | None:
            return queries.mark_submitting(
                conn, claim, now=clock.now(), lease_seconds=self._settings.lease_seconds
            )

        attempts = self._with_retries(mark)
        if attempts is None:
            log.info("request %s: reservation taken over by another worker", claim.id)
            return
        outcome = self._provider.submit(claim.body)
        view = RowView(status=RequestStatus.SUBMITTING, attempts=attempts)
        transition = after_submit(view, outcome, now=clock.now(), policy=self.policy, rng=self._rng)
        self._log_outcome(claim.id, outcome, transition)
        self._write(claim, RequestStatus.SUBMITTING, transition)

    def _poll_one(self, claim: queries.PollClaim, clock: DbClock) -> None:
        outcome = self._provider.poll(claim.remote_id)
        transition = after_poll(
            claim.view(), outcome, now=clock.now(), policy=self.policy, rng=self._rng
        )
        self._log_outcome(claim.id, outcome, transition)
        self._write(claim, RequestStatus.SUBMITTED, transition)

    def _write(
        self,
        claim: queries.SubmitClaim | queries.PollClaim,
        expected: RequestStatus,
        transition: Transition,
    ) -> None:
        """Record an outcome as soon as it lands; retried through a database restart."""
        request_id = claim.id

        def apply(conn: Connection) -> bool:
            return queries.apply_transition(
                conn,
                request_id,
                batch_id=claim.batch_id,
                expected=expected,
                lease_token=claim.lease_token,
                transition=transition,
            )

        try:
            applied = self._with_retries(apply)
        except DBAPIError:
            remote_id = transition.changes.get("remote_id")
            log.error(
                "could not record request %s -> %s (remote id %s): database unavailable",
                request_id,
                transition.status,
                remote_id,
            )
            raise
        if not applied:
            log.info("request %s: stale write ignored (another worker owns it now)", request_id)

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
