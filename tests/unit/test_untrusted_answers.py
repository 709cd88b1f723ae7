"""Provider answers are untrusted input: classifying never raises, every value is bounded, the key
is scrubbed in every spelling, and the rules never trust an out-of-range time or count."""

from __future__ import annotations

import json
import logging
import math
import random
import urllib.parse
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatbatch.logs import RedactSecret
from chatbatch.redaction import REDACTED, KeyProblem, Redactor, check_key
from chatbatch.rules.completions import USAGE_MAX, extract_fields
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
from chatbatch.rules.ratelimits import ModelState, Tuning, rate_limited
from chatbatch.rules.states import (
    Policy,
    RequestStatus,
    RowView,
    after_poll,
    after_submit,
    result_deadline,
    strike_limit,
)
from chatbatch.untrusted import has_controls
from worker.classify import classify_poll, classify_submit, expires_at_of, parse_retry_after

KEY = "sk-Secret/Key_0123456789"
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
POLICY = Policy(max_attempts=3, retention_seconds=7 * 86400)
RNG = random.Random(0)
WEEK_LATER = NOW + timedelta(days=7)


def body(obj: object) -> str:
    """JSON text of ``obj``; integers of any size, as a hostile provider may send."""
    return json.dumps(obj)


# --- classification never raises and bounds every value ----------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=30,
)
answer_fields = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "status": json_values | st.sampled_from(["succeed", "pending\x00", "failed", "\x1b[2J"]),
        "expires_at": json_values | st.integers(min_value=0, max_value=2**63),
        "choices": json_values,
        "usage": json_values,
        "error": json_values,
        "message": json_values,
        "code": json_values,
    },
)


def assert_bounded(outcome: object) -> None:
    """Every text an outcome carries into a column is one bounded, control-free value."""
    for name in ("remote_id", "remote_status", "code"):
        value = getattr(outcome, name, None)
        if isinstance(value, str):
            assert not has_controls(value) and len(value) <= 256, (name, value)
    message = getattr(outcome, "message", None)
    if isinstance(message, str):
        assert "\x00" not in message and "\x1b" not in message and len(message) <= 2000
    raw = getattr(outcome, "raw", None)
    if isinstance(raw, str):
        assert "\x00" not in raw


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from([200, 201, 400, 401, 404, 413, 429, 500, 503]),
    fields=answer_fields,
    retry_after=st.sampled_from(["", "inf", "-inf", "nan", "1e400", "1000000000", "Mon, 99 Foo"]),
)
def test_classifying_any_answer_never_raises_and_bounds_every_value(
    status: int, fields: dict[str, object], retry_after: str
) -> None:
    headers = {"retry-after": retry_after} if retry_after else {}
    for classify in (classify_submit, classify_poll):
        outcome = classify(status, headers, body(fields), retry_cap=300.0)
        assert_bounded(outcome)
        if isinstance(outcome, Retryable) and outcome.retry_after is not None:
            assert 0 <= outcome.retry_after <= 300.0
        if isinstance(outcome, Accepted) and outcome.expires_at is not None:
            assert outcome.expires_at.year <= 9999


@pytest.mark.parametrize(
    "text", ["<html>", "[1, 2]", "null", "\x00\x00", "{" * 5000, "[" * 100_000 + "]" * 100_000]
)
def test_unusable_answers_are_bad_responses_and_a_post_one_may_have_been_accepted(
    text: str,
) -> None:
    submitted = classify_submit(200, {}, text)
    polled = classify_poll(200, {}, text)
    assert isinstance(submitted, Retryable) and submitted.unusable and submitted.maybe_accepted
    assert isinstance(polled, Retryable) and polled.unusable and not polled.maybe_accepted


@pytest.mark.parametrize("task_id", ["abc\x00def", "x" * 5000, "\x1b[31mred", ""])
def test_a_task_id_we_cannot_poll_with_is_a_possibly_accepted_bad_response(task_id: str) -> None:
    outcome = classify_submit(200, {}, body({"id": task_id, "status": "pending"}))
    assert isinstance(outcome, Retryable) and outcome.unusable and outcome.maybe_accepted


def test_statuses_codes_and_messages_lose_their_control_characters() -> None:
    accepted = classify_submit(200, {}, body({"id": "t1", "status": "pending\x00"}))
    assert accepted == Accepted("t1", "pending", None)
    done = classify_poll(200, {}, body({"status": "succeed\x00", "choices": []}))
    assert isinstance(done, Completed)
    escape = "\x1b]0;pwned\x07\x1b[2J"
    refused = classify_submit(400, {}, body({"error": {"message": escape + "no", "code": "c\x00"}}))
    assert isinstance(refused, Rejected)
    assert refused.code == "c" and "\x1b" not in refused.message and "\x07" not in refused.message
    odd = classify_poll(200, {}, body({"status": "\x1b[31mqueued" + "x" * 200}))
    assert isinstance(odd, Pending) and not has_controls(odd.remote_status)
    assert len(odd.remote_status) <= 64


def test_a_raw_body_that_is_not_json_keeps_everything_but_nul() -> None:
    outcome = classify_submit(400, {}, "bad\x00 request\x1b")
    assert isinstance(outcome, Rejected) and outcome.raw == "bad request\x1b"


# --- times and pauses within range ---------------------------------------------------------------


def test_expires_at_is_read_in_seconds_or_milliseconds() -> None:
    seconds = 1_800_000_000
    assert expires_at_of(seconds) == datetime.fromtimestamp(seconds, UTC)
    assert expires_at_of(seconds * 1000) == datetime.fromtimestamp(seconds, UTC)
    for absurd in (2**70, 1e300, -5, 0, True, "soon", None, float("nan")):
        assert expires_at_of(absurd) is None


def test_an_expiry_outside_the_retention_window_is_replaced_by_the_window() -> None:
    assert result_deadline(None, now=NOW, policy=POLICY) == WEEK_LATER
    assert result_deadline(NOW - timedelta(hours=1), now=NOW, policy=POLICY) == WEEK_LATER
    assert result_deadline(NOW + timedelta(days=400), now=NOW, policy=POLICY) == WEEK_LATER
    soon = NOW + timedelta(days=2)
    assert result_deadline(soon, now=NOW, policy=POLICY) == soon


def test_a_task_said_to_have_expired_already_is_polled_not_expired() -> None:
    submitting = RowView(status=RequestStatus.SUBMITTING, attempts=1)
    accepted = Accepted("t1", "pending", NOW - timedelta(days=1))
    transition = after_submit(submitting, accepted, now=NOW, policy=POLICY, rng=RNG)
    assert transition.status == RequestStatus.SUBMITTED
    assert transition.changes["expires_at"] == WEEK_LATER
    row = RowView(
        status=RequestStatus.SUBMITTED,
        attempts=1,
        submitted_at=NOW,
        expires_at=transition.changes["expires_at"],
        remote_id="t1",
    )
    polled = after_poll(row, Pending("pending"), now=NOW, policy=POLICY, rng=RNG)
    assert polled.status == RequestStatus.SUBMITTED


@pytest.mark.parametrize(
    "value", ["inf", "1e400", "1000000000", "Fri, 01 Jan 2999 00:00:00 GMT", "86400"]
)
def test_retry_after_is_finite_and_capped(value: str) -> None:
    assert parse_retry_after({"retry-after": value}, cap=120.0) == 120.0


@pytest.mark.parametrize("value", ["nan", "-inf", "soon", "Mon, 99 Foo 2020"])
def test_retry_after_that_is_no_time_is_ignored(value: str) -> None:
    assert parse_retry_after({"retry-after": value}) is None


@pytest.mark.parametrize("retry_after", [math.inf, 1e9, math.nan])
def test_the_limiter_never_holds_a_model_back_past_its_cap(retry_after: float) -> None:
    tuning = Tuning(retry_after_max=30.0)
    state = rate_limited(ModelState(), 100.0, retry_after, None, tuning)
    assert state.blocked_until <= 100.0 + 30.0


# --- usage ---------------------------------------------------------------------------------------


def completion(usage: object) -> dict[str, object]:
    return {"choices": [{"message": {"content": "x"}, "finish_reason": "stop\x00"}], "usage": usage}


def test_usage_is_clamped_into_range_and_flagged() -> None:
    fields = extract_fields(completion({"prompt_tokens": 1e300, "completion_tokens": 2**70}))
    assert fields["prompt_tokens"] == fields["completion_tokens"] == USAGE_MAX
    assert fields["usage_clamped"] is True
    negative = extract_fields(completion({"prompt_tokens": -50, "total_tokens": 3}))
    assert negative["prompt_tokens"] == 0 and negative["total_tokens"] == 3
    assert negative["usage_clamped"] is True
    normal = extract_fields(completion({"prompt_tokens": 5, "total_tokens": "lots"}))
    assert (normal["prompt_tokens"], normal["total_tokens"], normal["usage_clamped"]) == (
        5,
        0,
        False,
    )
    assert normal["finish_reason"] == "stop"


# --- a request whose polls keep being unusable fails within its budget ---------------------------


def polled_row(strikes: int = 0) -> RowView:
    return RowView(
        status=RequestStatus.SUBMITTED,
        attempts=1,
        submitted_at=NOW,
        expires_at=WEEK_LATER,
        remote_id="t1",
        poll_strikes=strikes,
    )


def test_unusable_poll_answers_fail_the_request_within_its_attempt_budget() -> None:
    garbage = Retryable("bad_response", "poll answer is not JSON", http_status=200)
    row = polled_row()
    for _ in range(1, POLICY.max_attempts):
        transition = after_poll(row, garbage, now=NOW, policy=POLICY, rng=RNG)
        assert transition.status == RequestStatus.SUBMITTED
        row = polled_row(transition.changes["poll_strikes"])
    final = after_poll(row, garbage, now=NOW, policy=POLICY, rng=RNG)
    assert final.status == RequestStatus.FAILED
    assert final.changes["error_code"] == "bad_response"
    assert "unusable answers" in final.changes["error_message"]


def test_odd_statuses_fail_a_request_only_when_nothing_else_comes_in_a_row() -> None:
    odd, known = Pending("warming_up", known=False), Pending("running")
    limit = strike_limit(POLICY)
    row = polled_row(limit - 2)
    after_odd = after_poll(row, odd, now=NOW, policy=POLICY, rng=RNG)
    assert after_odd.status == RequestStatus.SUBMITTED
    assert after_odd.changes["poll_strikes"] == limit - 1
    cleared = after_poll(polled_row(limit - 1), known, now=NOW, policy=POLICY, rng=RNG)
    assert cleared.changes["poll_strikes"] == 0
    final = after_poll(polled_row(limit - 1), odd, now=NOW, policy=POLICY, rng=RNG)
    assert final.status == RequestStatus.FAILED and "warming_up" in final.changes["error_message"]


def test_a_poll_answer_with_neither_status_nor_result_is_unusable() -> None:
    for answer in ({"id": "t1"}, {"status": 5}, {"status": None}):
        outcome = classify_poll(200, {}, body(answer))
        assert isinstance(outcome, Retryable) and outcome.unusable, answer


def test_transient_poll_failures_do_not_count_as_unusable_answers() -> None:
    row = RowView(status=RequestStatus.SUBMITTED, submitted_at=NOW, expires_at=WEEK_LATER)
    for outcome in (Retryable("http_503", "busy", http_status=503), NotFound()):
        transition = after_poll(row, outcome, now=NOW, policy=POLICY, rng=RNG)
        assert "poll_strikes" not in transition.changes
    blocked = AccountBlocked("x", "no", 402)
    assert after_poll(row, blocked, now=NOW, policy=POLICY, rng=RNG).pause_batch
    failed = TaskFailed("task_failed", "boom")
    assert after_poll(row, failed, now=NOW, policy=POLICY, rng=RNG).status == "failed"


# --- the key, in every spelling ------------------------------------------------------------------


def spellings(key: str) -> list[str]:
    """The ways a provider might echo the key back."""
    return [
        key,
        f"Bearer {key}",
        orjson.dumps({"auth": key}).decode(),
        "".join(f"\\u{ord(c):04x}" for c in key),
        "".join(f"\\u{ord(c):04X}" for c in key),
        key.replace("/", "\\/"),
        urllib.parse.quote(key, safe=""),
        "".join(f"%{ord(c):02X}" for c in key),
        key[:5] + f"\\u{ord(key[5]):04x}" + key[6:9] + f"%{ord(key[9]):02X}" + key[10:],  # mixed
        "".join(f"\\\\u{ord(c):04x}" for c in key),  # JSON-escaped twice
        "".join(f"%25{ord(c):02x}" for c in key),  # URL-encoded twice
    ]


@pytest.mark.parametrize("echo", spellings(KEY))
def test_the_key_is_scrubbed_in_every_spelling(echo: str) -> None:
    scrubbed = Redactor(KEY)(f"before {echo} after")
    assert scrubbed.startswith("before ") and scrubbed.endswith(" after")
    assert REDACTED in scrubbed
    decoded = urllib.parse.unquote(scrubbed).encode().decode("unicode_escape")
    assert KEY.lower() not in decoded.lower()


def test_text_without_the_key_is_left_alone() -> None:
    text = 'ordinary {"a": "\\u00e9 100%25 sk-other"} text'
    assert Redactor(KEY)(text) == text
    assert Redactor(None)(text) == text


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("sk-1", "characters long"),
        (KEY + "\n", "whitespace"),
        ("sk 12345678", "whitespace"),
    ],
)
def test_keys_that_cannot_be_used_or_scrubbed_safely_are_refused(key: str, problem: str) -> None:
    with pytest.raises(KeyProblem, match=problem):
        check_key(key)


def test_the_log_filter_scrubs_exceptions_and_tracebacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("test.redaction")
    handler = logging.StreamHandler()
    handler.addFilter(RedactSecret(KEY))
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(
                f"the provider said {orjson.dumps(KEY).decode()} and %{ord('s'):02x}"
            )
        except RuntimeError:
            logger.exception("failed with %s", KEY)
        logger.error("stack", stack_info=True, extra={})
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "RuntimeError" in err and REDACTED in err
    assert KEY not in err


def test_a_rich_log_handler_shows_only_the_scrubbed_traceback() -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    console = Console(record=True, width=200)
    handler = RichHandler(console=console)
    handler.addFilter(RedactSecret(KEY))
    logger = logging.getLogger("test.redaction.rich")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"echoed {KEY}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    shown = console.export_text()
    assert "RuntimeError" in shown and REDACTED in shown and KEY not in shown


def test_what_an_answer_fills_is_what_a_new_round_empties() -> None:
    from chatbatch.rules.completions import ANSWER_COLUMNS, USAGE_COLUMNS, extract_fields
    from chatbatch.rules.states import ROUND_COLUMNS

    filled = set(extract_fields({"choices": []})) - {"usage_clamped"}
    assert filled == {*ANSWER_COLUMNS, *USAGE_COLUMNS}
    assert filled <= set(ROUND_COLUMNS)  # a retried request keeps nothing of its last answer
