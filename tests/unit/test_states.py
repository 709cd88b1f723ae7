"""The state machine's rules, exhaustively and without I/O."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from chatbatch.rules.outcomes import (
    Accepted,
    AccountBlocked,
    Completed,
    NotFound,
    Pending,
    Rejected,
    Retryable,
    TaskFailed,
)
from chatbatch.rules.polling import PlannedPolls
from chatbatch.rules.states import (
    Policy,
    RequestStatus,
    RowView,
    after_lease_expired,
    after_poll,
    after_submit,
    geometric_polls,
    retry_delay,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = Policy(max_attempts=3, retention_seconds=7 * 86400, expiry_margin_seconds=60)
SUBMITTING = RowView(status=RequestStatus.SUBMITTING, attempts=1)
COMPLETION = {
    "id": "t1",
    "model": "m",
    "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
        "billed_units": 2,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 1},
    },
}


def submitted(**kw: object) -> RowView:
    defaults: dict[str, object] = {
        "status": RequestStatus.SUBMITTED,
        "attempts": 1,
        "poll_count": 2,
        "submitted_at": NOW - timedelta(minutes=5),
        "expires_at": NOW + timedelta(days=7),
        "remote_id": "t1",
    }
    defaults.update(kw)
    return RowView(**defaults)


def rng() -> random.Random:
    return random.Random(1)


def test_accepted_stores_id_and_expiry_and_schedules_first_poll() -> None:
    t = after_submit(SUBMITTING, Accepted("t1"), now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.SUBMITTED
    assert t.changes["remote_id"] == "t1"
    assert t.changes["expires_at"] == NOW + timedelta(days=7)
    assert timedelta(seconds=0.8) <= t.due_at - NOW <= timedelta(seconds=1.2)
    assert not t.increment_ambiguous


def test_provider_expiry_hint_shortens_the_deadline() -> None:
    soon = NOW + timedelta(hours=1)
    t = after_submit(SUBMITTING, Accepted("t1", expires_at=soon), now=NOW, policy=POLICY, rng=rng())
    assert t.changes["expires_at"] == soon


def test_synchronous_completion_on_submit_succeeds_with_usage() -> None:
    t = after_submit(SUBMITTING, Completed("{}", COMPLETION), now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.SUCCEEDED
    assert t.changes["content"] == "hi"
    assert (t.changes["prompt_tokens"], t.changes["cached_tokens"]) == (7, 4)
    assert (t.changes["reasoning_tokens"], t.changes["billed_units"]) == (1, 2)


def test_a_completion_answering_the_post_keeps_its_id_and_when_it_was_sent() -> None:
    sent = NOW - timedelta(seconds=4)
    outcome = Completed("{}", COMPLETION, remote_id="chatcmpl-1")
    t = after_submit(SUBMITTING, outcome, now=NOW, policy=POLICY, rng=rng(), sent_at=sent)
    assert t.status is RequestStatus.SUCCEEDED
    assert (t.changes["remote_id"], t.changes["submitted_at"]) == ("chatcmpl-1", sent)
    assert t.changes["completed_at"] == NOW  # the latency is the 4 s the POST was open


def test_retryable_requeues_with_retry_after_and_no_ambiguity() -> None:
    outcome = Retryable("http_503", "overloaded", retry_after=30.0, http_status=503)
    t = after_submit(SUBMITTING, outcome, now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.QUEUED
    assert timedelta(seconds=30) <= t.due_at - NOW <= timedelta(seconds=30.25)
    assert not t.increment_ambiguous


def test_rate_limit_waits_without_using_up_attempts() -> None:
    row = RowView(status=RequestStatus.SUBMITTING, attempts=POLICY.max_attempts)
    outcome = Retryable("rate_limited", "429", retry_after=2.0, http_status=429)
    t = after_submit(row, outcome, now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.QUEUED
    assert t.changes["attempts"] == POLICY.max_attempts - 1
    assert timedelta(seconds=2) <= t.due_at - NOW <= timedelta(seconds=2.25)


def test_lost_answer_requeues_and_counts_a_possible_duplicate() -> None:
    outcome = Retryable("timeout", "ReadTimeout", maybe_accepted=True)
    t = after_submit(SUBMITTING, outcome, now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.QUEUED and t.increment_ambiguous


def test_retryable_fails_once_attempts_are_used_up() -> None:
    row = RowView(status=RequestStatus.SUBMITTING, attempts=3)
    t = after_submit(row, Retryable("http_503", "overloaded"), now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.FAILED
    assert "gave up after 3 attempts" in t.changes["error_message"]


@pytest.mark.parametrize("status", [400, 404, 413])
def test_rejected_fails_at_once_with_the_providers_message(status: int) -> None:
    outcome = Rejected(f"http_{status}", "bad messages", status, '{"error":{}}')
    t = after_submit(SUBMITTING, outcome, now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.FAILED
    assert t.changes["error_message"] == "bad messages"
    assert t.changes["http_status"] == status


@pytest.mark.parametrize("status", [401, 402, 403])
def test_account_errors_pause_the_batch_and_give_the_attempt_back(status: int) -> None:
    outcome = AccountBlocked("http", "insufficient balance", status)
    t = after_submit(SUBMITTING, outcome, now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.QUEUED
    assert t.pause_batch == "insufficient balance"
    assert t.changes["attempts"] == 0


def test_poll_pending_counts_polls_and_is_due_by_the_schedule() -> None:
    row = submitted(poll_count=3, submitted_at=NOW - timedelta(seconds=5))
    t = after_poll(row, Pending("running"), now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.SUBMITTED
    assert t.changes["poll_count"] == 4 and t.changes["polled_at"] == NOW
    age = (t.due_at - row.submitted_at).total_seconds()  # type: ignore[operator]
    assert age == geometric_polls(POLICY).next_age(5.0) and age > 5.0
    assert t.log is None


def test_a_planned_schedule_times_the_first_and_later_polls() -> None:
    plan = PlannedPolls((3.0, 7.0, 12.0), geometric_polls(POLICY))
    accepted = Accepted("t1", "pending", None)
    first = after_submit(SUBMITTING, accepted, now=NOW, policy=POLICY, rng=rng(), polls=plan)
    assert first.due_at == NOW + timedelta(seconds=3)
    row = submitted(submitted_at=NOW - timedelta(seconds=3.5))
    later = after_poll(row, Pending("running"), now=NOW, policy=POLICY, rng=rng(), polls=plan)
    assert later.due_at == NOW + timedelta(seconds=3.5)  # age 7 s


def test_unknown_status_keeps_polling_and_is_logged() -> None:
    t = after_poll(
        submitted(), Pending("warming_up", known=False), now=NOW, policy=POLICY, rng=rng()
    )
    assert t.status is RequestStatus.SUBMITTED
    assert "warming_up" in (t.log or "")


def test_poll_never_scheduled_past_the_expiry_margin() -> None:
    row = submitted(poll_count=50, expires_at=NOW + timedelta(seconds=90))
    t = after_poll(row, Pending("running"), now=NOW, policy=POLICY, rng=rng())
    assert t.due_at <= NOW + timedelta(seconds=30)


def test_poll_inside_the_margin_is_scheduled_no_later_than_expiry() -> None:
    row = submitted(poll_count=50, expires_at=NOW + timedelta(seconds=10))
    t = after_poll(row, Pending("running"), now=NOW, policy=POLICY, rng=rng())
    assert NOW <= t.due_at <= NOW + timedelta(seconds=10)


def test_poll_after_expiry_marks_expired() -> None:
    row = submitted(expires_at=NOW - timedelta(seconds=1))
    t = after_poll(row, Pending("running"), now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.EXPIRED
    assert t.changes["error_code"] == "expired"


def test_poll_done_stores_result() -> None:
    t = after_poll(submitted(), Completed("raw", COMPLETION), now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.SUCCEEDED
    assert t.changes["response"] == "raw" and t.changes["total_tokens"] == 10


def test_provider_failed_is_terminal() -> None:
    outcome = TaskFailed("task_failed", "model crashed", "{}")
    t = after_poll(submitted(), outcome, now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.FAILED and t.changes["error_message"] == "model crashed"


def test_404_soon_after_submission_is_retried() -> None:
    row = submitted(submitted_at=NOW - timedelta(seconds=3))
    t = after_poll(row, NotFound(), now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.SUBMITTED


def test_404_long_after_submission_fails() -> None:
    row = submitted(submitted_at=NOW - timedelta(hours=2))
    t = after_poll(row, NotFound(), now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.FAILED and t.changes["error_code"] == "not_found"


def test_404_after_retention_means_expired() -> None:
    row = submitted(expires_at=NOW - timedelta(seconds=5))
    t = after_poll(row, NotFound(), now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.EXPIRED


def test_poll_errors_keep_the_request_submitted_and_honour_retry_after() -> None:
    outcome = Retryable("rate_limited", "429", retry_after=12.0)
    t = after_poll(submitted(), outcome, now=NOW, policy=POLICY, rng=rng())
    assert t.status is RequestStatus.SUBMITTED
    assert timedelta(seconds=12) <= t.due_at - NOW <= timedelta(seconds=12.25)


def test_lost_lease_while_submitting_resubmits_and_counts() -> None:
    t = after_lease_expired(SUBMITTING, now=NOW, policy=POLICY)
    assert t.status is RequestStatus.QUEUED and t.increment_ambiguous


def test_lost_lease_after_last_attempt_fails() -> None:
    row = RowView(status=RequestStatus.SUBMITTING, attempts=3)
    t = after_lease_expired(row, now=NOW, policy=POLICY)
    assert t.status is RequestStatus.FAILED and t.changes["error_code"] == "worker_lost"


def test_retry_delay_grows_and_is_capped() -> None:
    policy = Policy(retry_base_seconds=1, retry_max_seconds=10)
    delays = [retry_delay(n, policy, rng(), None) for n in range(1, 8)]
    assert 0.5 <= delays[0] <= 1
    assert all(d <= 10 for d in delays)
    assert delays[4] >= 5


def test_polls_of_an_old_request_are_at_most_the_longest_wait_apart() -> None:
    schedule = geometric_polls(Policy(poll_first_seconds=1, poll_factor=2, poll_max_seconds=30))
    for age in (100.0, 1000.0, 86400.0):
        assert 0 < schedule.next_age(age) - age <= 30
