"""The request protocols: what each POST carries, and how a synchronous answer reads."""

from __future__ import annotations

import orjson
import pytest

from chatbatch.rules.outcomes import AccountBlocked, Completed, Rejected, Retryable
from worker.classify import classify_submit
from worker.protocols import protocol_for
from worker.protocols.sync import classify_answer

COMPLETION = {
    "id": "chatcmpl-9",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def text(obj: object) -> str:
    return orjson.dumps(obj).decode()


def test_background_mode_asks_for_a_background_task_and_sync_mode_sends_the_body_as_is() -> None:
    assert protocol_for("background").prepare(dict(BODY)) == {**BODY, "background": True}
    assert protocol_for("sync").prepare(dict(BODY)) == BODY
    assert protocol_for("sync").waits_for_answer and not protocol_for("background").waits_for_answer
    with pytest.raises(ValueError, match="unknown API mode"):
        protocol_for("responses")


def test_a_synchronous_completion_is_the_result_named_by_its_id() -> None:
    outcome = classify_answer(200, {"x-request-id": "req-1"}, text(COMPLETION))
    assert isinstance(outcome, Completed) and outcome.remote_id == "chatcmpl-9"
    assert outcome.body["choices"][0]["message"]["content"] == "hi"


def test_without_an_id_the_request_id_header_names_it_and_an_unusable_one_is_dropped() -> None:
    anonymous = {k: v for k, v in COMPLETION.items() if k != "id"}
    named = classify_answer(200, {"x-request-id": "req-1"}, text(anonymous))
    assert isinstance(named, Completed) and named.remote_id == "req-1"
    odd = classify_answer(200, {"x-request-id": "a\nb"}, text({**anonymous, "id": "x" * 300}))
    assert isinstance(odd, Completed) and odd.remote_id is None


def test_a_background_server_that_answers_at_once_gets_its_completion_named_too() -> None:
    outcome = classify_submit(200, {}, text(COMPLETION))
    assert isinstance(outcome, Completed) and outcome.remote_id == "chatcmpl-9"


@pytest.mark.parametrize(
    "answer",
    ['{"id": "task-1", "status": "pending"}', "not json", "[1, 2]", '{"choices": "none"}'],
)
def test_a_2xx_that_is_not_a_completion_was_served_all_the_same(answer: str) -> None:
    outcome = classify_answer(200, {}, answer)
    assert isinstance(outcome, Retryable) and outcome.unusable and outcome.maybe_accepted


def test_errors_read_as_in_background_mode() -> None:
    limited = classify_answer(429, {"retry-after": "3"}, text({"error": {"message": "slow"}}))
    assert isinstance(limited, Retryable) and limited.rate_limited and limited.retry_after == 3
    assert isinstance(classify_answer(402, {}, "{}"), AccountBlocked)
    refused = classify_answer(400, {}, text({"error": {"message": "bad", "code": "x"}}))
    assert isinstance(refused, Rejected) and refused.code == "x"
    lost = classify_answer(502, {}, "")
    assert isinstance(lost, Retryable) and lost.maybe_accepted
