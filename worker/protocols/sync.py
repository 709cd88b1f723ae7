"""Plain chat completions, as every OpenAI-compatible server speaks them: the POST stays open
while the model generates and its answer is the result. Nothing is polled; a POST whose answer
never came may still have been served (and billed), which the caller counts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from chatbatch.rules.outcomes import Completed, Outcome
from chatbatch.untrusted import storable
from worker.classify import (
    RETRY_AFTER_CAP,
    answer_id,
    bad_response,
    classify_error,
    classify_poll,
    never_raising,
    parse_body,
)
from worker.protocols import Protocol


def _as_is(body: dict[str, Any]) -> Mapping[str, Any]:
    return body  # the loader has already dropped ``background`` and refused ``stream``


def classify_answer(
    status: int, headers: Mapping[str, str], text: str, *, retry_cap: float = RETRY_AFTER_CAP
) -> Outcome:
    """Outcome of a synchronous ``POST /chat/completions``; never raises. A 2xx without a
    completion in it was served all the same, so asking again counts as possibly a duplicate."""

    def classify() -> Outcome:
        if 200 <= status < 300:
            return _completion(status, headers, text)
        return classify_error(status, headers, text, is_post=True, retry_cap=retry_cap)

    return never_raising(classify, status, maybe_accepted=True)


def _completion(status: int, headers: Mapping[str, str], text: str) -> Outcome:
    try:
        body = parse_body(text)
    except orjson.JSONDecodeError:
        return bad_response("answer is not JSON", http_status=status, maybe_accepted=True)
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        message = "answer is not a chat completion (no choices)"
        return bad_response(message, http_status=status, maybe_accepted=True)
    return Completed(storable(text.lstrip()), body, status, answer_id(body, headers))


PROTOCOL = Protocol(
    mode="sync",
    prepare=_as_is,
    classify_submit=classify_answer,
    classify_poll=classify_poll,  # only rows a background POST left behind are ever polled
    waits_for_answer=True,
)
