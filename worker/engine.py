"""The engine: claim due rows in chunks, call the provider concurrently, write the outcomes.

Used both by Celery tasks (distributed) and by ``chatbatch run`` (in-process); only the transport
of "go look" messages differs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy import Engine as DbEngine

from chatbatch.rules.polling import PollPlanner
from chatbatch.rules.ratelimits import parse_limits
from chatbatch.rules.states import Policy, geometric_polls
from chatbatch.settings import Settings
from chatbatch.store import liveness
from chatbatch.store.claims import (
    SubmitClaim,
    claim_for_poll,
    claim_for_submit,
    due_submission_models,
    next_claimable_at,
)
from chatbatch.store.db import db_now
from chatbatch.store.dialect import bounded
from worker.admission import Admission, SubmitBudget
from worker.cost_guard import CostGuard
from worker.housekeeping import Housekeeping
from worker.liveness import Heartbeat
from worker.notifier import Notifier
from worker.pipeline import ChunkPipeline
from worker.provider import Provider
from worker.providers import Call, ProviderSet, send_window
from worker.ratelimit import LocalRateLimiter, RateLimiter
from worker.recording import Chunk, DbClock, Landed, Recorder

STOP_GRACE_SECONDS = 5.0  # how long calls in flight may take to land after a stop
MIN_IDLE_SECONDS = 0.01
MAX_IDLE_SECONDS = 1.0  # look again at least this often: a batch loaded meanwhile is due now
STATEMENT_TIMEOUT_SECONDS = 30.0  # a claim takes milliseconds; one far slower is cut off


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
        provider: Provider | ProviderSet,
        settings: Settings,
        limiter: RateLimiter | None = None,
        task_threads: int = 1,
        batch_id: str | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self._db = db
        self._heartbeat = heartbeat  # started: claims carry its worker id
        if isinstance(provider, Provider):
            provider = ProviderSet.single(provider)
        self._provider = provider
        self._settings = settings
        self._limiter = limiter or LocalRateLimiter(limits=parse_limits(settings.rate_limits))
        self._admission = Admission(self._limiter)
        self._batch_id = batch_id  # work only this batch (``run``, ``process``); None: all
        self._stopping = threading.Event()
        self.policy = Policy.from_settings(settings)
        self._submit_budget = SubmitBudget(settings.concurrency)
        self._send_window = send_window(settings)
        # Each task thread claims a share, so that while one waits on the database another's
        # POSTs are in flight.
        self._submit_share = max(1, min(settings.chunk_size, settings.concurrency // task_threads))
        self._polls = PollPlanner(geometric_polls(self.policy), settings.poll_gets_per_result)
        expiry_warning = timedelta(seconds=settings.expiry_warning_seconds)
        stall_after = timedelta(seconds=settings.stall_seconds)
        self._housekeeping = Housekeeping(
            db=db,
            provider=provider,
            limiter=self._limiter,
            policy=self.policy,
            polls=self._polls,
            heartbeat_seconds=settings.heartbeat_seconds,
            expiry_warning=expiry_warning,
            stall_after=stall_after,
            # A fleet worker sends every batch's events; ``run`` and ``process`` their own, at
            # the end, with where the results went.
            notifier=None if batch_id else Notifier(db, settings),
        )
        self._recorder = Recorder(db=db, policy=self.policy, polls=self._polls)
        self._cost_guard = CostGuard()
        self._pipeline: ChunkPipeline | None = None  # sync mode: chunks overlap (pipeline.py)
        if provider.waits_for_answers:
            threads = settings.concurrency + 1  # a chunk holds one submission at least
            self._pipeline = ChunkPipeline(self._call_and_record, threads=threads)

    @property
    def chunk_size(self) -> int:
        """The most polls, and the most submissions, one step claims (``CHATBATCH_CHUNK_SIZE``)."""
        return self._settings.chunk_size

    def housekeeping(self) -> list[str]:
        """Requeue lost submissions, expire overdue results, settle cancellations, close finished
        batches."""
        return self._housekeeping.run()

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """A clean stop (callable from any thread, a signal handler too): claim nothing more;
        calls in flight get ``grace`` seconds to land and are recorded; claimed rows that were
        never sent go straight back to the queue."""
        self._stopping.set()
        self._provider.stop(grace)

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called: nothing more is claimed."""
        return self._stopping.is_set()

    def drain(self, budget_seconds: float) -> int:
        """Work chunks as they fall due until the budget is spent (or a stop), sleeping in
        between when the next one is due within it (so a poll is not late by a scheduler
        tick); returns how many requests were handled."""
        deadline = time.monotonic() + budget_seconds
        handled = 0
        while time.monotonic() < deadline and not self.stopping:
            if self._pipeline:
                self._pipeline.reap()
            step = self.step()
            handled += step
            if step:
                continue
            if self._pipeline and self._pipeline.busy and not self._submit_budget.free:
                self._submit_budget.wait_free(min(MAX_IDLE_SECONDS, deadline - time.monotonic()))
                continue
            wait = self._seconds_until_due()
            if wait is None or time.monotonic() + wait >= deadline:
                break
            if wait <= 0:  # due, yet nothing claimed: held by the rate limiter, or taken
                wait = self._admission.seconds_held() or 0.0
            time.sleep(min(max(wait, MIN_IDLE_SECONDS), MAX_IDLE_SECONDS))
        return handled

    def _seconds_until_due(self) -> float | None:
        """Seconds until the next row is claimable, on the database's clock (None: none)."""
        with self._db.connect() as conn:
            due = next_claimable_at(conn, self._batch_id)
            if due is None:
                return None
            return (due - db_now(conn)).total_seconds()

    def step(self) -> int:
        """Claim, call and record one chunk (in sync mode: start it on the pipeline); returns
        how many requests it held (none once stopping)."""
        if self.stopping:
            return 0
        self._housekeeping.before_first_post()
        submit_slots = self._submit_budget.take(self._submit_share)
        try:
            chunk = self._claim_chunk(self._reserve_submissions(submit_slots))
        except BaseException:
            self._submit_budget.give_back(submit_slots)
            raise
        self._submit_budget.give_back(submit_slots - len(chunk.submits))  # claimed for none
        if not (chunk.polls or chunk.submits):
            return 0
        if self._pipeline:
            self._pipeline.start(chunk)
        else:
            self._call_and_record(chunk)
        return len(chunk.polls) + len(chunk.submits)

    def _claim_chunk(self, wanted: Mapping[str, int]) -> Chunk:
        """Claim due polls and the reserved submissions in one transaction; the grants no row
        was claimed for go back to the limiter, also when the claim fails."""
        claimed: list[SubmitClaim] = []
        try:
            with self._db.begin() as conn:
                bounded(conn, STATEMENT_TIMEOUT_SECONDS)
                clock = DbClock(db_now(conn))
                if self.worker_id:  # the claims below prove this worker alive
                    liveness.vouch(conn, self.worker_id, now=clock.anchor)
                polls = claim_for_poll(
                    conn,
                    now=clock.anchor,
                    limit=self.chunk_size,
                    lease_seconds=self._settings.lease_seconds,
                    batch_id=self._batch_id,
                    worker_id=self.worker_id,
                )
                submits = self._routed(self._claim_submissions(conn, clock.anchor, wanted))
                checks = self._recorder.learn_checks(conn, polls, submits)
            claimed = submits
        finally:
            self._admission.release_unclaimed(wanted, [claim.model for claim in claimed])
        return Chunk(submits, polls, clock, checks)

    def _routed(self, submits: list[SubmitClaim]) -> list[SubmitClaim]:
        """``submits``, each naming the provider that serves its model."""
        return [replace(claim, provider=self._provider.route(claim.model)) for claim in submits]

    def _reserve_submissions(self, slots: int) -> dict[str, int]:
        """What the rate limiter lets this chunk submit, per model, asked before any row is
        claimed (so a claimed row is never left waiting on the limiter)."""
        if not slots:
            return {}
        with self._db.connect() as conn:
            due = due_submission_models(
                conn,
                now=db_now(conn),
                limit=slots,
                excluding=self._admission.held_models(),
                batch_id=self._batch_id,
            )
        return self._admission.reserve(due, slots) if due else {}

    def _claim_submissions(
        self, conn: Connection, now: datetime, wanted: Mapping[str, int]
    ) -> list[SubmitClaim]:
        """Claim what was reserved, model by model, within the cost caps (what one model's
        claims take from a capped batch is not there for the next)."""
        if not wanted:
            return []
        capped = self._cost_guard.limits(conn)
        lease = self._settings.lease_seconds
        claims: list[SubmitClaim] = []
        for model, count in wanted.items():
            taken = claim_for_submit(
                conn,
                now=now,
                limit=count,
                lease_seconds=lease,
                capped=capped,
                model=model,
                batch_id=self._batch_id,
                worker_id=self.worker_id,
            )
            if capped:
                capped = {
                    batch: allowed - sum(c.batch_id == batch for c in taken)
                    for batch, allowed in capped.items()
                }
            claims += taken
        return claims

    @property
    def worker_id(self) -> str | None:
        """The id this engine's claims are held under (None: no heartbeat, the lease only)."""
        return self._heartbeat.worker_id if self._heartbeat else None

    def close(self) -> None:
        """Record the chunks still in flight, close the provider's connections, and stop the
        heartbeat (marking the worker stopped)."""
        try:
            if self._pipeline:
                self._pipeline.close()
        finally:
            self._provider.close()
            if self._heartbeat:
                self._heartbeat.stop()

    def _call_and_record(self, chunk: Chunk) -> None:
        """Send the chunk's calls and record their outcomes as they land (an accepted task id is
        committed soon after its POST returns); then tell the limiter how the POSTs fared."""
        held = len(chunk.submits)  # submit slots; in sync mode each goes back once written

        def written(count: int) -> None:
            nonlocal held
            held -= count
            self._submit_budget.give_back(count)

        # In background mode the slots go back with the chunk: answers land within
        # milliseconds, and whole chunks keep the claims (database round trips) few.
        on_written = written if self._pipeline else None

        try:
            self._housekeeping.polled(poll.model for poll in chunk.polls)
            landed: Landed = queue.Queue()
            route = self._provider.poll_route
            calls = self._provider.start(
                [Call(claim.provider, claim.body) for claim in chunk.submits],
                [Call(route(poll.provider, poll.model), poll.remote_id) for poll in chunk.polls],
                lambda index, outcome: landed.put((index, outcome)),
                # A claim whose commit was held up (a partition) may be taken over by now.
                send_by=chunk.clock.started + self._send_window,
            )
            outcomes = self._recorder.record(chunk, landed, calls, on_written)
        finally:
            self._submit_budget.give_back(held)
        self._admission.report([claim.model for claim in chunk.submits], outcomes)
