"""The request state machine: pure functions from (row, outcome, now, policy) to a transition.

Nothing here does I/O, so every rule is unit-tested directly. ``store.writes`` applies the
transitions as guarded updates (``WHERE status = :expected AND lease_token = :token``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from chatbatch.rules.completions import ANSWER_COLUMNS, USAGE_COLUMNS, extract_fields
from chatbatch.rules.outcomes import (
    BAD_RESPONSE,
    Accepted,
    AccountBlocked,
    Completed,
    NotFound,
    NotSent,
    Outcome,
    Pending,
    Rejected,
    Retryable,
    TaskFailed,
)
from chatbatch.rules.polling import GeometricPolls, PollSchedule
from chatbatch.rules.structured import answer_problem


class RequestStatus(StrEnum):
    """Where one request is in its life."""

    QUEUED = "queued"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    # Answered from an identical request's earlier answer (``load --reuse``): nothing was paid.
    REUSED = "reused"


class BatchStatus(StrEnum):
    """Whether a batch's requests may be worked on.

    ``cancelling``: nothing more is submitted, but results already paid for are still fetched;
    it becomes ``cancelled`` when none is left in flight.
    """

    RUNNING = "running"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (RequestStatus.QUEUED, RequestStatus.SUBMITTING, RequestStatus.SUBMITTED)
TERMINAL_STATUSES = (
    RequestStatus.SUCCEEDED,
    RequestStatus.FAILED,
    RequestStatus.EXPIRED,
    RequestStatus.CANCELLED,
    RequestStatus.REUSED,
)
# Finished with an answer the user can use.
ANSWERED_STATUSES = (RequestStatus.SUCCEEDED, RequestStatus.REUSED)
# The error code of an answer that did not follow the batch's schema and was asked again.
SCHEMA_INVALID = "schema_invalid"


@dataclass(frozen=True)
class Policy:
    """Retry, polling and expiry rules, taken from the settings."""

    max_attempts: int = 6
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    poll_first_seconds: float = 1.0
    poll_factor: float = 1.5
    poll_max_seconds: float = 60.0
    expiry_margin_seconds: float = 60.0
    not_found_grace_seconds: float = 600.0
    retention_seconds: float = 7 * 24 * 3600.0

    @classmethod
    def from_settings(cls, settings: Any) -> Policy:
        """Build the policy from a ``Settings`` object."""
        return cls(
            max_attempts=settings.max_attempts,
            retry_base_seconds=settings.retry_base_seconds,
            retry_max_seconds=settings.retry_max_seconds,
            poll_first_seconds=settings.poll_first_seconds,
            poll_factor=settings.poll_factor,
            poll_max_seconds=settings.poll_max_seconds,
            expiry_margin_seconds=settings.expiry_margin_seconds,
            not_found_grace_seconds=settings.not_found_grace_seconds,
            retention_seconds=settings.result_retention_seconds,
        )


@dataclass(frozen=True)
class RowView:
    """The columns of a request row that the rules read."""

    status: RequestStatus
    attempts: int = 0
    poll_count: int = 0
    submitted_at: datetime | None = None
    expires_at: datetime | None = None
    remote_id: str | None = None
    retries: int = 0
    invalid_retries: int = 0
    poll_strikes: int = 0


@dataclass(frozen=True)
class AnswerCheck:
    """The batch's JSON Schema (compact JSON text) and how often an answer that does not follow
    it is asked again."""

    schema_json: str
    retry_invalid: int = 0


@dataclass(frozen=True)
class Transition:
    """The new state of a row, the columns to write with it, and whether to pause its batch.

    ``archive``: the row's outcome moves to ``past_results`` first (columns the row does not
    hold yet, such as the answer being replaced), as ``chatbatch retry`` does.
    """

    status: RequestStatus
    due_at: datetime
    changes: Mapping[str, Any] = field(default_factory=dict)
    pause_batch: str | None = None
    increment_ambiguous: bool = False
    log: str | None = None
    archive: Mapping[str, Any] | None = None


def retry_delay(
    attempt: int, policy: Policy, rng: random.Random, retry_after: float | None
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): Retry-After if given, else
    capped exponential backoff with equal jitter so retries of a chunk spread out."""
    if retry_after is not None:
        return min(policy.retry_max_seconds, retry_after) + rng.uniform(0, 0.25)
    ceiling = min(policy.retry_max_seconds, policy.retry_base_seconds * 2 ** max(0, attempt - 1))
    return rng.uniform(ceiling / 2, ceiling)


def geometric_polls(policy: Policy) -> GeometricPolls:
    """The configured fixed poll schedule (used until completion times have been learned)."""
    return GeometricPolls(policy.poll_first_seconds, policy.poll_factor, policy.poll_max_seconds)


def _error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error_code": code, "error_message": message[:2000], **extra}


def after_submit(
    row: RowView,
    outcome: Outcome,
    *,
    now: datetime,
    policy: Policy,
    rng: random.Random,
    polls: PollSchedule | None = None,
    check: AnswerCheck | None = None,
    sent_at: datetime | None = None,
) -> Transition:
    """What a POST's outcome does to a ``submitting`` row; ``polls`` times the first poll
    (default: the policy's geometric schedule), ``check`` judges an answer given at once and
    ``sent_at`` (default ``now``) is when its POST went out, the start of its latency."""
    if isinstance(outcome, Accepted):
        expires_at = result_deadline(outcome.expires_at, now=now, policy=policy)
        changes = {
            "remote_id": outcome.remote_id,
            "remote_status": outcome.remote_status,
            "submitted_at": now,
            "expires_at": expires_at,
            "poll_count": 0,
            "error_code": None,
            "error_message": None,
        }
        first_poll = (polls or geometric_polls(policy)).next_age(0.0)
        due = _cap_to_expiry(now + _seconds(first_poll), expires_at, policy, now)
        return Transition(RequestStatus.SUBMITTED, due, changes)
    if isinstance(outcome, Completed):  # answered at once: a sync POST, or one that ignored
        done = _succeeded(row, outcome, now, check)  # background mode
        sent = {"remote_id": outcome.remote_id, "submitted_at": sent_at or now}
        archive = done.archive and {**done.archive, **sent}  # a re-ask keeps who answered
        return replace(done, changes={**sent, **done.changes}, archive=archive)
    if isinstance(outcome, NotSent):
        return never_sent(row, now=now)
    if isinstance(outcome, Retryable) and outcome.rate_limited:
        delay = retry_delay(row.attempts, policy, rng, outcome.retry_after)
        changes = {"attempts": max(0, row.attempts - 1), **_error(outcome.code, outcome.message)}
        return Transition(RequestStatus.QUEUED, now + _seconds(delay), changes)
    if isinstance(outcome, Retryable):
        if row.attempts >= policy.max_attempts:
            message = f"gave up after {row.attempts} attempts; last error: {outcome.message}"
            return Transition(
                RequestStatus.FAILED,
                now,
                _error(outcome.code, message, completed_at=now, http_status=outcome.http_status),
                increment_ambiguous=outcome.maybe_accepted,
            )
        delay = retry_delay(row.attempts, policy, rng, outcome.retry_after)
        return Transition(
            RequestStatus.QUEUED,
            now + _seconds(delay),
            _error(outcome.code, outcome.message),
            increment_ambiguous=outcome.maybe_accepted,
        )
    if isinstance(outcome, AccountBlocked):
        # Not the request's fault: give the attempt back and stop the batch.
        return Transition(
            RequestStatus.QUEUED,
            now,
            {"attempts": max(0, row.attempts - 1)},
            pause_batch=outcome.message,
        )
    if isinstance(outcome, Rejected | TaskFailed | NotFound):
        return _failed(outcome, now)
    if isinstance(outcome, Pending):  # an id-less "pending" answer cannot be polled
        return Transition(
            RequestStatus.QUEUED,
            now + _seconds(retry_delay(row.attempts, policy, rng, None)),
            _error("bad_response", "provider answered without a task id"),
            increment_ambiguous=True,
        )
    raise TypeError(f"unexpected outcome {outcome!r}")


def sent_to(transition: Transition, provider: str) -> Transition:
    """``transition`` noting the provider a POST went to, in the row (unless a new round clears
    it) and in what it archives (a re-asked answer keeps who gave it)."""
    changes = {"provider": provider, **transition.changes}
    archive = transition.archive and {**transition.archive, "provider": provider}
    return replace(transition, changes=changes, archive=archive)


def result_deadline(given: datetime | None, *, now: datetime, policy: Policy) -> datetime:
    """When an accepted task's result is deleted: the provider's ``expires_at`` if it lies
    between now and the retention window's end, else the window's end (a time in the past or
    years ahead is a provider's mistake, not a reason to give up at once or never poll)."""
    latest = now + timedelta(seconds=policy.retention_seconds)
    return given if given is not None and now < given <= latest else latest


def never_sent(row: RowView, *, now: datetime) -> Transition:
    """A claimed row that was never sent (the process was stopping): back to the queue at
    once, its attempt given back, nothing counted as a possible duplicate."""
    return Transition(RequestStatus.QUEUED, now, {"attempts": max(0, row.attempts - 1)})


def after_poll(
    row: RowView,
    outcome: Outcome,
    *,
    now: datetime,
    policy: Policy,
    rng: random.Random,
    polls: PollSchedule | None = None,
    check: AnswerCheck | None = None,
) -> Transition:
    """What a GET's outcome does to a ``submitted`` row; ``polls`` times the next poll by the
    request's age (default: the policy's geometric schedule), ``check`` judges the answer."""
    expires_at = row.expires_at or now + timedelta(seconds=policy.retention_seconds)
    if isinstance(outcome, Completed):
        return _succeeded(row, outcome, now, check)
    if isinstance(outcome, NotSent):  # the poll never left: due again at once, nothing changed
        return Transition(RequestStatus.SUBMITTED, now, {})
    if isinstance(outcome, TaskFailed | Rejected):
        return _failed(outcome, now)
    if now >= expires_at:
        return expired_transition(now)
    poll_count = row.poll_count + 1
    if isinstance(outcome, Retryable) and outcome.unusable:
        return _unusable_poll(row, outcome, now, policy, rng, expires_at)
    if isinstance(outcome, Pending):
        strikes = 0 if outcome.known else row.poll_strikes + 1
        if strikes >= strike_limit(policy):
            message = f"the provider kept answering with status {outcome.remote_status!r}"
            return _gave_up(message, strikes, now, http_status=200)
        submitted_at = row.submitted_at or now
        age = (now - submitted_at).total_seconds()
        next_age = (polls or geometric_polls(policy)).next_age(age)
        due = max(now, submitted_at + _seconds(next_age))
        log = None if outcome.known else f"unknown task status {outcome.remote_status!r}"
        changes = {
            "poll_count": poll_count,
            "remote_status": outcome.remote_status,
            "polled_at": now,
        }
        if strikes != row.poll_strikes:
            changes["poll_strikes"] = strikes
        return Transition(
            RequestStatus.SUBMITTED, _cap_to_expiry(due, expires_at, policy, now), changes, log=log
        )
    if isinstance(outcome, NotFound):
        age = (now - row.submitted_at).total_seconds() if row.submitted_at else 0.0
        if age > policy.not_found_grace_seconds:
            message = (
                f"provider does not know task {row.remote_id} (404) {age:.0f} s after submission"
            )
            return Transition(
                RequestStatus.FAILED, now, _error("not_found", message, completed_at=now)
            )
    retry_after = getattr(outcome, "retry_after", None)
    due = now + _seconds(retry_delay(min(poll_count, 30), policy, rng, retry_after))
    message = getattr(outcome, "message", "poll failed")
    changes = {"poll_count": poll_count, "error_message": f"last poll: {message}"[:2000]}
    pause = outcome.message if isinstance(outcome, AccountBlocked) else None
    return Transition(
        RequestStatus.SUBMITTED,
        _cap_to_expiry(due, expires_at, policy, now),
        changes,
        pause_batch=pause,
    )


# An answer we cannot read counts this many strikes; a status we do not know, one. A request
# fails at ``STRIKES_PER_UNUSABLE * max_attempts`` strikes in a row (a known status clears
# them): garbage ends it within its attempt budget, while an odd status now and then, which
# real providers send, never does.
STRIKES_PER_UNUSABLE = 5


def strike_limit(policy: Policy) -> int:
    """Strikes in a row at which polling a request is given up."""
    return STRIKES_PER_UNUSABLE * policy.max_attempts


def _unusable_poll(
    row: RowView,
    outcome: Retryable,
    now: datetime,
    policy: Policy,
    rng: random.Random,
    expires_at: datetime,
) -> Transition:
    """A poll answered with something we cannot use: polled again with backoff, but a request
    whose polls keep being answered so fails after ``max_attempts`` of them instead of being
    polled until its result expires."""
    strikes = row.poll_strikes + STRIKES_PER_UNUSABLE
    if strikes >= strike_limit(policy):
        message = f"unusable answers to polls; last: {outcome.message}"
        return _gave_up(message, strikes, now, http_status=outcome.http_status)
    due = now + _seconds(retry_delay(strikes // STRIKES_PER_UNUSABLE, policy, rng, None))
    changes = {
        "poll_count": row.poll_count + 1,
        "poll_strikes": strikes,
        "error_message": f"last poll: {outcome.message}"[:2000],
    }
    return Transition(
        RequestStatus.SUBMITTED, _cap_to_expiry(due, expires_at, policy, now), changes
    )


def _gave_up(reason: str, strikes: int, now: datetime, *, http_status: int | None) -> Transition:
    """Polling given up: the request fails as a ``bad_response``, saying why."""
    changes = _error(
        BAD_RESPONSE, f"gave up polling: {reason}", completed_at=now, http_status=http_status
    )
    return Transition(RequestStatus.FAILED, now, {**changes, "poll_strikes": strikes})


def after_lease_expired(row: RowView, *, now: datetime, policy: Policy) -> Transition:
    """A ``submitting`` row whose worker vanished: the POST may have reached the provider.

    Resubmit (counting a possible duplicate) unless the attempts are used up.
    """
    if row.attempts >= policy.max_attempts:
        message = f"worker lost while submitting, {row.attempts} times; giving up"
        return Transition(
            RequestStatus.FAILED,
            now,
            _error("worker_lost", message, completed_at=now),
            increment_ambiguous=True,
        )
    return Transition(RequestStatus.QUEUED, now, {}, increment_ambiguous=True)


UNSTORABLE = "unstorable_answer"


def unstorable(now: datetime, reason: str) -> Transition:
    """A request whose outcome could not be worked out or stored (the database refused it):
    it fails, saying why, instead of taking the chunk's other outcomes down with it."""
    message = f"the provider's answer could not be recorded: {reason}"
    return Transition(RequestStatus.FAILED, now, _error(UNSTORABLE, message, completed_at=now))


def expired_transition(now: datetime) -> Transition:
    """The provider's retention window closed before the result was fetched."""
    message = "result was not fetched before the provider's retention window closed"
    return Transition(RequestStatus.EXPIRED, now, _error("expired", message, completed_at=now))


def _succeeded(
    row: RowView, outcome: Completed, now: datetime, check: AnswerCheck | None
) -> Transition:
    changes = {
        **extract_fields(outcome.body),
        "response": outcome.raw,
        "http_status": outcome.http_status,
        "remote_status": "succeed",
        "completed_at": now,
        "error_code": None,
        "error_message": None,
    }
    if check is None:
        return Transition(RequestStatus.SUCCEEDED, now, changes)
    problem = answer_problem(changes["content"], check.schema_json)
    changes["schema_valid"] = problem is None
    changes["schema_error"] = problem
    if problem is None or row.invalid_retries >= check.retry_invalid:
        return Transition(RequestStatus.SUCCEEDED, now, changes)
    return _asked_again(row, changes, problem, now)


# Cleared when a request is queued for a new round (an invalid answer asked again, or
# ``chatbatch retry``): what its last submission and answer left.
ROUND_COLUMNS = (
    "provider",
    "remote_id",
    "remote_status",
    "submitted_at",
    "polled_at",
    "expires_at",
    "completed_at",
    "http_status",
    "response",
    *ANSWER_COLUMNS,
    *USAGE_COLUMNS,
    "schema_valid",
    "schema_error",
)
# The values a new round starts with: the columns above emptied, counters of the round zeroed.
ROUND_RESETS: Mapping[str, Any] = {
    **dict.fromkeys(ROUND_COLUMNS),
    "usage_clamped": False,
    "poll_strikes": 0,
}


def _asked_again(
    row: RowView, answer: Mapping[str, Any], problem: str, now: datetime
) -> Transition:
    """An answer that does not follow the schema, with re-asks left: it moves to
    ``past_results`` (the provider billed it, so usage totals keep it) and the request starts a
    new round at once, with a fresh attempt budget."""
    message = problem[:2000]
    archive = {
        "round": row.retries + 1,
        "status": RequestStatus.SUCCEEDED.value,
        "completed_at": now,
        "http_status": answer["http_status"],
        "response": answer["response"],
        **{name: answer[name] for name in USAGE_COLUMNS},
        "usage_clamped": answer["usage_clamped"],
        "error_code": SCHEMA_INVALID,
        "error_message": message,
        "archived_at": now,
    }
    changes = {
        **ROUND_RESETS,
        "attempts": 0,
        "poll_count": 0,
        "retries": row.retries + 1,
        "invalid_retries": row.invalid_retries + 1,
        "error_code": SCHEMA_INVALID,
        "error_message": message,
    }
    return Transition(RequestStatus.QUEUED, now, changes, archive=archive)


def _failed(outcome: Rejected | TaskFailed | NotFound, now: datetime) -> Transition:
    extra: dict[str, Any] = {"completed_at": now}
    if isinstance(outcome, Rejected | TaskFailed):
        extra["response"] = outcome.raw
        extra["http_status"] = outcome.http_status
    if isinstance(outcome, TaskFailed):
        extra["remote_status"] = "failed"
    return Transition(RequestStatus.FAILED, now, _error(outcome.code, outcome.message, **extra))


def _cap_to_expiry(due: datetime, expires_at: datetime, policy: Policy, now: datetime) -> datetime:
    """Never schedule a poll later than the retention deadline minus the safety margin."""
    latest = expires_at - timedelta(seconds=policy.expiry_margin_seconds)
    if latest > now:
        return min(due, latest)
    return max(now, min(due, expires_at))


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
