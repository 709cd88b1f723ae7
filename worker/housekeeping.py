"""Between chunks: the sweeps that keep the database honest, and the engine's plans current.

Each tick requeues submissions whose worker was lost (its lease ran out, or its heartbeat
stopped) and frees its polls, expires results not fetched in time,
settles cancellations and closes finished batches (one transaction); then, when due, replans
the polls of every model this worker has polled and reads the provider's published limits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy import Engine as DbEngine

from chatbatch.rules.polling import PollPlanner
from chatbatch.rules.ratelimits import limits_from_models_listing
from chatbatch.rules.states import Policy
from chatbatch.store import liveness, notifications, reads, sweeps
from chatbatch.store.db import db_now
from chatbatch.store.dialect import bounded
from worker.notifier import Notifier
from worker.providers import ProviderSet
from worker.ratelimit import RateLimiter

log = logging.getLogger("chatbatch.engine")

REPLAN_SECONDS = 10.0
LIMITS_READ_SECONDS = 600.0
LEARN_WINDOW = timedelta(hours=6)
EVENTS_CHECK_SECONDS = 30.0
SWEEP_TIMEOUT_SECONDS = 60.0  # each sweep statement takes milliseconds; one far slower is cut


class Housekeeping:
    """The engine's periodic duties: sweeps, poll replanning, published limits."""

    def __init__(
        self,
        *,
        db: DbEngine,
        provider: ProviderSet,
        limiter: RateLimiter,
        policy: Policy,
        polls: PollPlanner,
        heartbeat_seconds: float,
        expiry_warning: timedelta,
        stall_after: timedelta,
        notifier: Notifier | None = None,
    ) -> None:
        self._db = db
        self._expiry_warning = expiry_warning
        self._stall_after = stall_after
        self._notifier = notifier  # None: this engine's events are sent by whoever runs it
        self._events_checked_at: float | None = None
        self._heartbeat_seconds = heartbeat_seconds
        self._provider = provider
        self._limiter = limiter
        self._policy = policy
        self._polls = polls
        self._planned_at: dict[str, float] = {}  # model -> monotonic time of its last replan
        self._limits_read_at: float | None = None

    def run(self) -> list[str]:
        """Requeue lost submissions, expire overdue results, settle cancellations, close finished
        batches; returns the batches finished."""
        with self._db.begin() as conn:
            bounded(conn, SWEEP_TIMEOUT_SECONDS)
            now = db_now(conn)
            beats = self._heartbeat_seconds
            recovered = sweeps.recover_expired_leases(
                conn, now=now, policy=self._policy, heartbeat_seconds=beats
            )
            released = sweeps.release_lost_polls(conn, now=now, heartbeat_seconds=beats)
            liveness.prune(conn, now=now)
            expired = sweeps.expire_overdue(conn, now=now)
            cancelled = sweeps.cancel_leftovers(conn, now=now)
            finished = sweeps.finish_batches(conn, now=now)
            for batch_id in finished:
                notifications.record(conn, batch_id, notifications.FINISHED)
            self._record_periodic_events(conn, now)
        self._send_notifications()
        self.replan_polls()
        self.read_published_limits()
        if recovered:
            log.warning("requeued %d request(s) whose worker was lost while submitting", recovered)
        if released:
            log.warning("took over %d poll(s) from a worker that stopped beating", released)
        if expired:
            log.warning("%d request(s) expired before their result was fetched", expired)
        if cancelled:
            log.info("%d request(s) of cancelled batches marked cancelled", cancelled)
        for batch_id in finished:
            log.info("batch %s finished", batch_id)
        return finished

    def _record_periodic_events(self, conn: Connection, now: datetime) -> None:
        """Every ``EVENTS_CHECK_SECONDS`` (they scan requests: not every tick), record
        ``batch.expiring`` for batches whose results are about to expire unfetched and
        ``batch.stalled`` for batches with work due and no progress."""
        checked = self._events_checked_at
        if checked is not None and time.monotonic() - checked < EVENTS_CHECK_SECONDS:
            return
        self._events_checked_at = time.monotonic()
        for batch_id in notifications.record_expiring(conn, now=now, warning=self._expiry_warning):
            log.warning("batch %s has results about to expire unfetched", batch_id)
        for batch_id in notifications.record_stalled(conn, now=now, stall_after=self._stall_after):
            log.warning("batch %s is stalled: work is due and nothing progresses", batch_id)

    def _send_notifications(self) -> None:
        """Send the batches' due events, if this engine sends them."""
        if self._notifier is None:
            return
        for failure in self._notifier.deliver():
            log.warning("%s; trying again later", failure)

    def before_first_post(self) -> None:
        """Read the published limits if this process never has: before its first POST, not its
        first tick."""
        if self._limits_read_at is None:
            self.read_published_limits()

    def polled(self, models: Iterable[str]) -> None:
        """Note models this worker polls, so that their polls get replanned."""
        for model in models:
            self._planned_at.setdefault(model, 0.0)

    def read_published_limits(self) -> None:
        """Every ``LIMITS_READ_SECONDS``, tell the limiter the provider's published per-model
        limits (GeekAI lists them at ``GET /models``); a provider without them changes nothing."""
        now = time.monotonic()
        if self._limits_read_at is not None and now - self._limits_read_at < LIMITS_READ_SECONDS:
            return
        self._limits_read_at = now
        listing = self._provider.models()
        if listing is not None:
            self._limiter.set_published(limits_from_models_listing(listing))

    def replan_polls(self) -> None:
        """Every ``REPLAN_SECONDS``, replan the polls of each model this worker has polled from
        what the database shows of its completion times in the last ``LEARN_WINDOW``."""
        if self._polls.gets_per_result is None:
            return
        due = [
            model
            for model, planned in list(self._planned_at.items())
            if time.monotonic() - planned >= REPLAN_SECONDS
        ]
        for model in due:
            with self._db.connect() as conn:
                since = db_now(conn) - LEARN_WINDOW
                observations = reads.completion_observations(conn, model, since=since)
            self._planned_at[model] = time.monotonic()
            if self._polls.replan(model, observations):
                log.debug("replanned polls of %s: %s", model, self._polls.schedule(model))
