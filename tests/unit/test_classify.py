"""Every kind of provider answer maps to the right outcome."""

from __future__ import annotations

import httpx
import orjson
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
from worker.classify import (
    classify_exception,
    classify_poll,
    classify_submit,
    normalise_status,
    parse_retry_after,
)

DONE = {
    "id": "t1",
    "status": "succeed",
    "choices": [{"message": {"content": "x"}}],
    "usage": {"total_tokens": 3},
}


def body(obj: object) -> str:
    return orjson.dumps(obj).decode()


def test_background_accept() -> None:
    outcome = classify_submit(200, {}, body({"id": "t1", "status": "pending"}))
    assert outcome == Accepted("t1", "pending")


def test_accept_without_id_is_ambiguous() -> None:
    outcome = classify_submit(200, {}, body({"status": "pending"}))
    assert isinstance(outcome, Retryable) and outcome.maybe_accepted


def test_synchronous_answer_on_submit_is_a_completion() -> None:
    outcome = classify_submit(200, {}, body({**DONE, "status": None}))
    assert isinstance(outcome, Completed)


@pytest.mark.parametrize("status", [401, 402, 403])
def test_account_errors(status: int) -> None:
    outcome = classify_submit(status, {}, body({"error": {"message": "nope", "code": "x"}}))
    assert isinstance(outcome, AccountBlocked)
    assert str(status) in outcome.message and "nope" in outcome.message


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_client_errors_reject(status: int) -> None:
    outcome = classify_submit(status, {}, body({"error": {"message": "bad", "type": "invalid"}}))
    assert isinstance(outcome, Rejected)
    assert outcome.code == "invalid" and "bad" in outcome.message


def test_top_level_message_is_tolerated() -> None:
    outcome = classify_submit(400, {}, body({"message": "too long"}))
    assert isinstance(outcome, Rejected) and "too long" in outcome.message


def test_429_honours_retry_after() -> None:
    outcome = classify_submit(429, {"retry-after": "7"}, "")
    assert isinstance(outcome, Retryable)
    assert outcome.retry_after == 7 and not outcome.maybe_accepted


@pytest.mark.parametrize(("status", "maybe"), [(500, True), (502, True), (503, False), (504, True)])
def test_5xx_retries_and_marks_possible_acceptance(status: int, maybe: bool) -> None:
    outcome = classify_submit(status, {}, "oops")
    assert isinstance(outcome, Retryable) and outcome.maybe_accepted is maybe


def test_poll_states() -> None:
    assert classify_poll(200, {}, body({"id": "t", "status": "pending"})) == Pending("pending")
    assert classify_poll(200, {}, body({"id": "t", "status": "running"})) == Pending("running")
    assert isinstance(classify_poll(200, {}, body(DONE)), Completed)
    assert isinstance(classify_poll(200, {}, body({**DONE, "status": "success"})), Completed)
    failed = classify_poll(200, {}, body({"status": "failed", "error": {"message": "boom"}}))
    assert isinstance(failed, TaskFailed) and failed.message == "boom"
    odd = classify_poll(200, {}, body({"status": "queued_for_gpu"}))
    assert odd == Pending("queued_for_gpu", known=False)


def test_poll_tolerates_leading_blank_lines_and_keeps_raw_without_them() -> None:
    raw = "\n\n\n" + body(DONE)
    outcome = classify_poll(200, {}, raw)
    assert isinstance(outcome, Completed) and outcome.raw == body(DONE)


def test_poll_404_and_errors() -> None:
    assert isinstance(classify_poll(404, {}, ""), NotFound)
    assert isinstance(classify_poll(503, {}, ""), Retryable)
    assert isinstance(classify_poll(401, {}, ""), AccountBlocked)
    assert isinstance(classify_poll(200, {}, "not json"), Retryable)


def test_transport_errors() -> None:
    request = httpx.Request("POST", "http://x")
    connect = classify_exception(httpx.ConnectError("refused", request=request), is_post=True)
    assert not connect.maybe_accepted
    read = classify_exception(httpx.ReadTimeout("slow", request=request), is_post=True)
    assert read.maybe_accepted and read.code == "timeout"
    reset = classify_exception(httpx.RemoteProtocolError("closed", request=request), is_post=True)
    assert reset.maybe_accepted
    poll = classify_exception(httpx.ReadTimeout("slow", request=request), is_post=False)
    assert not poll.maybe_accepted


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "garbage"}) is None
    in_past = parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert in_past == 0


def test_status_normalisation() -> None:
    assert normalise_status("SUCCEED") == "succeed"
    assert normalise_status("completed") == "succeed"
    assert normalise_status("canceled") == "failed"
    assert normalise_status("in_progress") == "pending"
    assert normalise_status("mystery") is None
