"""The engine: claim due rows in chunks, call the provider concurrently, write the outcomes.

Used both by Celery tasks (distributed) and by ``chatbatch run`` (in-process); only the transport
of "go look" messages differs.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy import Engine as DbEngine
from sqlalchemy.exc import DBAPIError

from chatbatch.rules.outcomes import Accepted, Completed, Outcome, Retryable
from chatbatch.rules.polling import PollPlanner
from chatbatch.rules.ratelimits import parse_limits
from chatbatch.rules.states import (
    AnswerCheck,
    Policy,
    RequestStatus,
    Transition,
    after_poll,
    after_submit,
    geometric_polls,
    unstorable,
)
from chatbatch.settings import Settings
from chatbatch.store.claims import (
    PollClaim,
    SubmitClaim,
    answer_checks,
    claim_for_poll,
    claim_for_submit,
    due_submission_models,
    next_claimable_at,
)
from chatbatch.store.db import db_now, is_transient
from chatbatch.store.writes import Write, apply_transitions
from worker.admission import Admission
from worker.cost_guard import CostGuard
from worker.housekeeping import Housekeeping
from worker.provider import Provider
from worker.ratelimit import LocalRateLimiter, RateLimiter

log = logging.getLogger("chatbatch.engine")
T = TypeVar("T")

WRITE_RETRIES = 8
STOP_GRACE_SECONDS = 5.0  # how long calls in flight may take to land after a stop
FLUSH_SECONDS = 0.05  # outcomes landing this close together are written in one transaction
MIN_IDLE_SECONDS = 0.01
MAX_IDLE_SECONDS = 1.0  # look again at least this often: a batch loaded meanwhile is due now
MAX_CACHED_BATCHES = 10_000  # answer checks remembered; past it the cache starts afresh


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
        limiter: RateLimiter | None = None,
        task_threads: int = 1,
        batch_id: str | None = None,
    ) -> None:
        self._db = db
        self._provider = provider
        self._settings = settings
        self._limiter = limiter or LocalRateLimiter(limits=parse_limits(settings.rate_limits))
        self._admission = Admission(self._limiter)
        self._batch_id = batch_id  # work only this batch (``run``, ``process``); None: all
        self._stopping = threading.Event()
        self.policy = Policy.from_settings(settings)
        self._submit_budget = SubmitBudget(settings.concurrency)
        # Each task thread claims a share, so that while one waits on the database another's
        # POSTs are in flight.
        self._submit_share = max(1, min(settings.chunk_size, settings.concurrency // task_threads))
        self._polls = PollPlanner(geometric_polls(self.policy), settings.poll_gets_per_result)
        self._housekeeping = Housekeeping(
            db=db, provider=provider, limiter=self._limiter, policy=self.policy, polls=self._polls
        )
        # batch id -> its schema check (None: no schema); fixed at load, so read once per batch.
        self._checks: dict[str, AnswerCheck | None] = {}
        self._cost_guard = CostGuard()
        self._rng = random.Random()

    @property
    def chunk_size(self) -> int:
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
        return self._stopping.is_set()

    def drain(self, budget_seconds: float) -> int:
        """Work chunks as they fall due until the budget is spent (or a stop), sleeping in
        between when the next one is due within it (so a poll is not late by a scheduler
        tick); returns how many requests were handled."""
        deadline = time.monotonic() + budget_seconds
        handled = 0
        while time.monotonic() < deadline and not self.stopping:
            step = self.step()
            handled += step
            if step:
                continue
            wait = self._seconds_until_due()
            if wait is None or time.monotonic() + wait >= deadline:
                break
            if wait <= 0:  # due, yet nothing claimed: held by the rate limiter, or taken
                wait = self._admission.seconds_held() or 0.0
            time.sleep(min(max(wait, MIN_IDLE_SECONDS), MAX_IDLE_SECONDS))
        return handled

    def _seconds_until_due(self) -> float | None:
        with self._db.connect() as conn:
            due = next_claimable_at(conn, self._batch_id)
            if due is None:
                return None
            return (due - db_now(conn)).total_seconds()

    def step(self) -> int:
        """Claim, call and record one chunk; returns how many requests it held (none once
        stopping)."""
        if self.stopping:
            return 0
        self._housekeeping.before_first_post()
        submit_slots = self._submit_budget.take(self._submit_share)
        try:
            wanted = self._reserve_submissions(submit_slots)
            with self._db.begin() as conn:
                clock = DbClock(db_now(conn))
                lease = self._settings.lease_seconds
                polls = claim_for_poll(
                    conn,
                    now=clock.anchor,
                    limit=self.chunk_size,
                    lease_seconds=lease,
                    batch_id=self._batch_id,
                )
                submits = self._claim_submissions(conn, clock.anchor, wanted)
                checks = self._learn_checks(conn, polls, submits)
            self._admission.release_unclaimed(wanted, [claim.model for claim in submits])
            if polls or submits:
                self._call_and_record(submits, polls, clock, checks)
        finally:
            self._submit_budget.give_back(submit_slots)
        return len(polls) + len(submits)

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
            )
            if capped:
                capped = {
                    batch: allowed - sum(c.batch_id == batch for c in taken)
                    for batch, allowed in capped.items()
                }
            claims += taken
        return claims

    def close(self) -> None:
        self._provider.close()

    def _learn_checks(
        self,
        conn: Connection,
        polls: list[PollClaim],
        submits: list[SubmitClaim],
    ) -> Mapping[str, AnswerCheck | None]:
        """The schema checks of the claimed rows' batches, reading those not seen before (one
        query, only when a new batch turns up). A full cache is replaced, not emptied, so a
        chunk in flight in another thread keeps the checks it was given."""
        checks = self._checks
        unknown = {c.batch_id for c in polls if c.batch_id not in checks}
        unknown.update(c.batch_id for c in submits if c.batch_id not in checks)
        if not unknown:
            return checks
        if len(checks) + len(unknown) > MAX_CACHED_BATCHES:
            checks = {}
            unknown = {c.batch_id for c in polls} | {c.batch_id for c in submits}
        found = answer_checks(conn, unknown)
        checks.update({batch_id: found.get(batch_id) for batch_id in unknown})
        self._checks = checks
        return checks

    def _call_and_record(
        self,
        submits: list[SubmitClaim],
        polls: list[PollClaim],
        clock: DbClock,
        checks: Mapping[str, AnswerCheck | None],
    ) -> None:
        """Send the chunk's calls and record their outcomes as they land, in micro-batches of at
        most ``FLUSH_SECONDS``: an accepted task id is committed within that of its POST
        returning, whatever the chunk's slowest call is doing."""
        self._housekeeping.polled(poll.model for poll in polls)
        writes: list[Write] = []
        landed: queue.Queue[tuple[int, Outcome]] = queue.Queue()
        calls = self._provider.start(
            [claim.body for claim in submits],
            [claim.remote_id for claim in polls],
            lambda index, outcome: landed.put((index, outcome)),
        )
        outcomes: dict[int, Outcome] = {}
        remaining = len(submits) + len(polls)
        while remaining:
            batch = self._next_landed(landed, calls, remaining)
            remaining -= len(batch)
            now = clock.now()
            for index, outcome in batch:
                outcomes[index] = outcome
                if index < len(submits):
                    claim = submits[index]
                    check = checks.get(claim.batch_id)
                    writes.append(self._submit_write(claim, outcome, now, check))
                else:
                    poll = polls[index - len(submits)]
                    check = checks.get(poll.batch_id)
                    writes.append(self._poll_write(poll, outcome, now, check))
            self._write(writes, now)
            writes = []
        if writes:
            self._write(writes, clock.now())
        self._tell_limiter(submits, [outcomes[i] for i in range(len(submits))])

    @staticmethod
    def _next_landed(
        landed: queue.Queue[tuple[int, Outcome]], calls: Future[None], remaining: int
    ) -> list[tuple[int, Outcome]]:
        """The next outcomes: at least one, then whatever lands within ``FLUSH_SECONDS``."""
        while True:
            try:
                batch = [landed.get(timeout=1.0)]
                break
            except queue.Empty:
                if calls.done():
                    calls.result()  # a bug in the calls: raise it rather than wait forever
                    raise RuntimeError("HTTP calls ended without every outcome") from None
        flush_at = time.monotonic() + FLUSH_SECONDS
        while len(batch) < remaining:
            wait = flush_at - time.monotonic()
            if wait <= 0:
                break
            try:
                batch.append(landed.get(timeout=wait))
            except queue.Empty:
                break
        return batch

    def _submit_write(
        self,
        claim: SubmitClaim,
        outcome: Outcome,
        now: datetime,
        check: AnswerCheck | None,
    ) -> Write:
        rule = after_submit
        return self._outcome_write(claim, RequestStatus.SUBMITTING, rule, outcome, now, check)

    def _poll_write(
        self, claim: PollClaim, outcome: Outcome, now: datetime, check: AnswerCheck | None
    ) -> Write:
        rule = after_poll
        return self._outcome_write(claim, RequestStatus.SUBMITTED, rule, outcome, now, check)

    def _outcome_write(
        self,
        claim: SubmitClaim | PollClaim,
        expected: RequestStatus,
        rule: Callable[..., Transition],
        outcome: Outcome,
        now: datetime,
        check: AnswerCheck | None,
    ) -> Write:
        """The write ``rule`` (``after_submit`` or ``after_poll``) makes of ``outcome``; if the
        answer breaks the rule itself, the request fails alone, saying so."""
        try:
            transition = rule(
                claim.view(),
                outcome,
                now=now,
                policy=self.policy,
                rng=self._rng,
                polls=self._polls.schedule(claim.model),
                check=check,
            )
        except Exception as exc:
            log.exception("request %s: could not judge the provider's answer", claim.id)
            transition = unstorable(now, f"{type(exc).__name__} while judging it")
        self._log_outcome(claim.id, outcome, transition)
        return Write(claim.id, claim.batch_id, expected, claim.lease_token, transition)

    def _tell_limiter(self, claims: list[SubmitClaim], outcomes: list[Outcome]) -> None:
        """Hand back concurrency slots and report acceptances and 429s, per model."""
        sent: Counter[str] = Counter()
        accepted: Counter[str] = Counter()
        refused: dict[str, float | None] = {}
        for claim, outcome in zip(claims, outcomes, strict=True):
            sent[claim.model] += 1
            if isinstance(outcome, Accepted | Completed):
                accepted[claim.model] += 1
            elif isinstance(outcome, Retryable) and outcome.rate_limited:
                retry_after = refused.get(claim.model)
                if outcome.retry_after is not None:
                    retry_after = max(retry_after or 0.0, outcome.retry_after)
                refused[claim.model] = retry_after
        for model, count in sent.items():
            self._limiter.release(model, count)
            if accepted[model]:
                self._limiter.on_accepted(model, accepted[model])
        for model, retry_after in refused.items():
            self._limiter.on_rate_limited(model, retry_after)

    def _write(self, writes: list[Write], now: datetime) -> None:
        """Record a chunk's outcomes as soon as they land; retried through a database restart.
        A write the database refuses for a lasting reason (a value it cannot hold) is retried
        row by row, so one unstorable answer fails one request, never its neighbours."""
        try:
            applied = self._apply(writes)
        except DBAPIError as exc:
            if is_transient(exc):
                self._log_lost(writes)
                raise
            applied = self._write_each(writes, now)
        except Exception:  # a value the driver could not even send
            applied = self._write_each(writes, now)
        if applied < len(writes):
            log.info(
                "%d stale write(s) ignored (another worker owns those rows now)",
                len(writes) - applied,
            )

    def _apply(self, writes: list[Write]) -> int:
        """Apply ``writes`` in one transaction, through database restarts."""
        return self._with_retries(lambda conn: apply_transitions(conn, writes))

    def _write_each(self, writes: list[Write], now: datetime) -> int:
        """Apply ``writes`` one transaction each; a row whose outcome cannot be stored fails
        with the reason instead. Returns how many applied."""
        applied = 0
        for write in writes:
            try:
                applied += self._apply([write])
            except DBAPIError as exc:
                if is_transient(exc):
                    self._log_lost([write])
                    raise
                applied += self._write_unstorable(write, _refusal(exc), now)
            except Exception as exc:
                applied += self._write_unstorable(write, type(exc).__name__, now)
        return applied

    def _write_unstorable(self, write: Write, reason: str, now: datetime) -> int:
        """Fail the request of a write the database refused, saying why (guarded like any
        write); 0 if even that cannot be stored (its lease then hands the row on)."""
        log.error("request %s: outcome refused by the database: %s", write.request_id, reason)
        failed = replace(write, transition=unstorable(now, f"the database refused it ({reason})"))
        try:
            return self._apply([failed])
        except DBAPIError as exc:
            if is_transient(exc):
                raise
            log.exception("request %s: could not record its failure either", write.request_id)
            return 0

    @staticmethod
    def _log_lost(writes: list[Write]) -> None:
        """Name the accepted tasks whose ids were about to be lost with the database."""
        lost = [
            (w.request_id, w.transition.changes["remote_id"])
            for w in writes
            if w.transition.changes.get("remote_id")
        ]
        log.error(
            "could not record %d outcome(s): database unavailable; accepted tasks "
            "(request, remote id): %s",
            len(writes),
            lost,
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
        if transition.archive:
            log.info(
                "request %s: answer does not follow the schema, asking again: %s",
                request_id,
                transition.changes.get("error_message"),
            )
        if transition.pause_batch:
            log.error("pausing batch: %s", transition.pause_batch)
        if transition.increment_ambiguous:
            log.warning(
                "request %s: submission may have reached the provider: %s", request_id, outcome
            )


def _refusal(exc: DBAPIError) -> str:
    """The database's reason for refusing a write, one line, without the statement or its
    parameters."""
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
    return reason[:300]
