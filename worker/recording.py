"""Recording a chunk's outcomes: each judged by the transition rules, then written as it lands.

Outcomes landing within ``FLUSH_SECONDS`` of each other are written in one transaction, so an
accepted task id is committed soon after its POST returns, whatever the chunk's slowest call is
doing. Every write is guarded by status and lease token; writes are retried through a database
restart; a write the database refuses for a lasting reason is retried row by row, so one
unstorable answer fails one request, never its neighbours.
"""

from __future__ import annotations

import functools
import logging
import queue
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy import Engine as DbEngine
from sqlalchemy.exc import DBAPIError

from chatbatch.rules.outcomes import NotSent, Outcome
from chatbatch.rules.polling import PollPlanner
from chatbatch.rules.states import (
    AnswerCheck,
    Policy,
    RequestStatus,
    Transition,
    after_poll,
    after_submit,
    sent_to,
    unstorable,
)
from chatbatch.store.claims import PollClaim, SubmitClaim, answer_checks
from chatbatch.store.db import is_transient
from chatbatch.store.writes import Write, apply_transitions

log = logging.getLogger("chatbatch.engine")
T = TypeVar("T")

WRITE_RETRIES = 8
FLUSH_SECONDS = 0.05  # outcomes landing this close together are written in one transaction
MAX_CACHED_BATCHES = 10_000  # answer checks remembered; past it the cache starts afresh

Landed = queue.Queue[tuple[int, Outcome]]  # (index in the chunk, outcome) as calls land


@dataclass
class DbClock:
    """The database's time at claim, advanced by the local monotonic clock (no extra queries)."""

    anchor: datetime
    started: float = field(default_factory=time.monotonic)

    def now(self) -> datetime:
        """The database's time now, as nearly as the claim's anchor and elapsed time tell."""
        return self.anchor + timedelta(seconds=time.monotonic() - self.started)


@dataclass(frozen=True)
class Chunk:
    """One step's claimed rows (submissions first, then polls, in call order), the clock they
    were claimed on, and the answer checks of their batches."""

    submits: list[SubmitClaim]
    polls: list[PollClaim]
    clock: DbClock
    checks: Mapping[str, AnswerCheck | None]


class Recorder:
    """Turns outcomes into guarded writes and stores them; one per engine."""

    def __init__(self, *, db: DbEngine, policy: Policy, polls: PollPlanner) -> None:
        self._db = db
        self._policy = policy
        self._polls = polls
        # batch id -> its schema check (None: no schema); fixed at load, so read once per batch.
        self._checks: dict[str, AnswerCheck | None] = {}
        self._rng = random.Random()

    def learn_checks(
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

    def record(
        self,
        chunk: Chunk,
        landed: Landed,
        calls: Future[None],
        on_submits_written: Callable[[int], None] | None = None,
    ) -> list[Outcome]:
        """Record the chunk's outcomes as they land, in micro-batches of at most
        ``FLUSH_SECONDS``, telling ``on_submits_written`` how many submissions each one
        settled; returns the submissions' outcomes, in order."""
        outcomes: dict[int, Outcome] = {}
        remaining = len(chunk.submits) + len(chunk.polls)
        while remaining:
            batch = self._next_landed(landed, calls, remaining)
            remaining -= len(batch)
            now = chunk.clock.now()
            writes: list[Write] = []
            for index, outcome in batch:
                outcomes[index] = outcome
                writes.append(self._judge(chunk, index, outcome, now))
            self.write(writes, now)
            if on_submits_written:
                on_submits_written(sum(index < len(chunk.submits) for index, _ in batch))
        return [outcomes[i] for i in range(len(chunk.submits))]

    @staticmethod
    def _next_landed(
        landed: Landed, calls: Future[None], remaining: int
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

    def _judge(self, chunk: Chunk, index: int, outcome: Outcome, now: datetime) -> Write:
        """The write for the outcome of the chunk's call ``index``: a submission's or a poll's."""
        if index < len(chunk.submits):
            claim = chunk.submits[index]
            check = chunk.checks.get(claim.batch_id)
            return self._submit_write(claim, outcome, now, check, sent_at=chunk.clock.anchor)
        poll = chunk.polls[index - len(chunk.submits)]
        check = chunk.checks.get(poll.batch_id)
        return self._poll_write(poll, outcome, now, check)

    def _submit_write(
        self,
        claim: SubmitClaim,
        outcome: Outcome,
        now: datetime,
        check: AnswerCheck | None,
        *,
        sent_at: datetime,
    ) -> Write:
        """The write a submission's outcome makes (the row must still be ``submitting``); its
        POST went out at ``sent_at`` (just after the claim)."""
        rule = functools.partial(after_submit, sent_at=sent_at)
        write = self._outcome_write(claim, RequestStatus.SUBMITTING, rule, outcome, now, check)
        if claim.provider is None or isinstance(outcome, NotSent):
            return write
        return replace(write, transition=sent_to(write.transition, claim.provider))

    def _poll_write(
        self, claim: PollClaim, outcome: Outcome, now: datetime, check: AnswerCheck | None
    ) -> Write:
        """The write a poll's outcome makes (the row must still be ``submitted``)."""
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
                policy=self._policy,
                rng=self._rng,
                polls=self._polls.schedule(claim.model),
                check=check,
            )
        except Exception as exc:
            log.exception("request %s: could not judge the provider's answer", claim.id)
            transition = unstorable(now, f"{type(exc).__name__} while judging it")
        _log_outcome(claim.id, outcome, transition)
        return Write(claim.id, claim.batch_id, expected, claim.lease_token, transition)

    def write(self, writes: list[Write], now: datetime) -> None:
        """Record a chunk's outcomes as soon as they land; retried through a database restart.
        A write the database refuses for a lasting reason (a value it cannot hold) is retried
        row by row, so one unstorable answer fails one request, never its neighbours."""
        try:
            applied = self._apply(writes)
        except DBAPIError as exc:
            if is_transient(exc):
                _log_lost(writes)
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
                    _log_lost([write])
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


def _log_outcome(request_id: int, outcome: Outcome, transition: Transition) -> None:
    """Say what an outcome did that an operator should hear of."""
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
        log.warning("request %s: submission may have reached the provider: %s", request_id, outcome)


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


def _refusal(exc: DBAPIError) -> str:
    """The database's reason for refusing a write, one line, without the statement or its
    parameters."""
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
    return reason[:300]
