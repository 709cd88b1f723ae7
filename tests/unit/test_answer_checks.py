"""Answers checked against a batch's JSON Schema: the state rules, without I/O."""

from __future__ import annotations

import random
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import orjson
import pytest

from chatbatch.errors import InputError
from chatbatch.rules.completions import USAGE_COLUMNS
from chatbatch.rules.outcomes import Completed, Pending
from chatbatch.rules.states import (
    SCHEMA_INVALID,
    AnswerCheck,
    Policy,
    RequestStatus,
    RowView,
    Transition,
    after_poll,
    after_submit,
)
from chatbatch.rules.structured import answer_problem, load_schema, schema_text

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = Policy(max_attempts=3)
SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"enum": ["positive", "negative"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["label", "confidence"],
    "additionalProperties": False,
}
CHECK = AnswerCheck(orjson.dumps(SCHEMA).decode(), retry_invalid=2)
VALID = '{"label": "positive", "confidence": 0.9}'


def completed(content: str) -> Completed:
    body = {
        "id": "t1",
        "model": "m",
        "choices": [{"message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
    return Completed(orjson.dumps(body).decode(), body)


def polled(row: RowView, content: str, check: AnswerCheck | None = CHECK) -> Transition:
    return after_poll(
        row, completed(content), now=NOW, policy=POLICY, rng=random.Random(1), check=check
    )


def submitted(**kw: object) -> RowView:
    defaults: dict[str, object] = {
        "status": RequestStatus.SUBMITTED,
        "attempts": 2,
        "poll_count": 4,
        "submitted_at": NOW - timedelta(minutes=1),
        "expires_at": NOW + timedelta(days=7),
        "remote_id": "t1",
        "retries": 1,
        "invalid_retries": 0,
    }
    defaults.update(kw)
    return RowView(**defaults)  # type: ignore[arg-type]


def test_without_a_schema_nothing_is_judged() -> None:
    t = polled(submitted(), "not json at all", check=None)
    assert t.status is RequestStatus.SUCCEEDED
    assert "schema_valid" not in t.changes and t.archive is None


@pytest.mark.parametrize("content", [VALID, f"```json\n{VALID}\n```"])
def test_a_valid_answer_succeeds_marked_valid(content: str) -> None:
    t = polled(submitted(), content)
    assert t.status is RequestStatus.SUCCEEDED
    assert (t.changes["schema_valid"], t.changes["schema_error"]) == (True, None)
    assert t.archive is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"label": "positive"', "not JSON"),
        ('{"label": "maybe", "confidence": 0.5}', "label: 'maybe' is not one of"),
        ('{"label": "positive", "confidence": "high"}', "confidence: 'high' is not of type"),
    ],
)
def test_an_invalid_answer_with_retries_left_is_archived_and_asked_again(
    content: str, problem: str
) -> None:
    t = polled(submitted(invalid_retries=1), content)
    assert t.status is RequestStatus.QUEUED and t.due_at == NOW
    assert t.changes["attempts"] == 0 and t.changes["poll_count"] == 0
    assert t.changes["invalid_retries"] == 2 and t.changes["retries"] == 2
    assert t.changes["error_code"] == SCHEMA_INVALID
    assert problem in t.changes["error_message"]
    for cleared in ("remote_id", "submitted_at", "expires_at", "response", "content"):
        assert t.changes[cleared] is None
    assert all(t.changes[name] is None for name in USAGE_COLUMNS)
    assert t.changes["schema_valid"] is None  # judged again when the new answer lands
    assert t.archive is not None
    assert t.archive["round"] == 2 and t.archive["status"] == "succeeded"
    assert (t.archive["error_code"], t.archive["error_message"]) == (
        SCHEMA_INVALID,
        t.changes["error_message"],
    )
    assert orjson.loads(t.archive["response"])["choices"][0]["message"]["content"] == content
    assert (t.archive["prompt_tokens"], t.archive["total_tokens"]) == (7, 10)
    assert t.archive["completed_at"] == t.archive["archived_at"] == NOW
    assert not t.increment_ambiguous and t.pause_batch is None


def test_an_invalid_answer_is_kept_once_the_retries_are_used_up() -> None:
    t = polled(submitted(invalid_retries=2), '{"label": 1, "confidence": 0}')
    assert t.status is RequestStatus.SUCCEEDED and t.archive is None
    assert t.changes["schema_valid"] is False
    assert t.changes["content"] == '{"label": 1, "confidence": 0}'  # the raw text is kept
    assert "label: 1 is not one of" in t.changes["schema_error"]


def test_no_retries_allowed_keeps_the_first_invalid_answer() -> None:
    check = AnswerCheck(CHECK.schema_json, retry_invalid=0)
    t = polled(submitted(), "", check=check)
    assert t.status is RequestStatus.SUCCEEDED
    assert t.changes["schema_valid"] is False and t.changes["schema_error"].startswith("not JSON")


def test_a_synchronous_answer_to_the_post_is_judged_the_same_way() -> None:
    row = RowView(status=RequestStatus.SUBMITTING, attempts=1, retries=0, invalid_retries=0)
    valid = after_submit(
        row, completed(VALID), now=NOW, policy=POLICY, rng=random.Random(1), check=CHECK
    )
    assert valid.status is RequestStatus.SUCCEEDED and valid.changes["schema_valid"] is True
    invalid = after_submit(
        row, completed("[]"), now=NOW, policy=POLICY, rng=random.Random(1), check=CHECK
    )
    assert invalid.status is RequestStatus.QUEUED and invalid.archive is not None
    assert invalid.archive["round"] == 1 and invalid.changes["invalid_retries"] == 1


def test_an_answer_without_content_is_invalid() -> None:
    body = {"id": "t1", "choices": [{"message": {"role": "assistant", "content": None}}]}
    t = after_poll(
        submitted(invalid_retries=2),
        Completed(orjson.dumps(body).decode(), body),
        now=NOW,
        policy=POLICY,
        rng=random.Random(1),
        check=CHECK,
    )
    assert t.changes["schema_error"] == "the answer has no content"


def test_a_pending_poll_is_not_judged() -> None:
    t = after_poll(
        submitted(), Pending("running"), now=NOW, policy=POLICY, rng=random.Random(1), check=CHECK
    )
    assert t.status is RequestStatus.SUBMITTED and "schema_valid" not in t.changes


# --- the schema must judge answers on its own: nothing is ever fetched -----------------------

LOCAL_REFS = {
    "$id": "https://schemas.test/answer.json",
    "$defs": {
        "label": {"enum": ["positive", "negative"]},
        "unit": {"$id": "unit.json", "type": "number", "minimum": 0, "maximum": 1},
        "note": {"$anchor": "note", "type": "string"},
    },
    "type": "object",
    "properties": {
        "label": {"$ref": "#/$defs/label"},
        "confidence": {"$ref": "unit.json"},
        "note": {"$ref": "#note"},
    },
    "required": ["label", "confidence"],
}


def schema_file(tmp_path: Path, schema: object) -> Path:
    path = tmp_path / "answer.schema.json"
    path.write_bytes(schema if isinstance(schema, bytes) else orjson.dumps(schema))
    return path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every attempt to open a URL, recorded and refused (jsonschema fetches with urlopen)."""
    calls: list[object] = []

    def urlopen(*args: object, **kwargs: object) -> NoReturn:
        calls.append(args)
        raise OSError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


@pytest.mark.parametrize(
    "ref",
    [
        "https://example.invalid/x.json",
        "other.json",
        "#/$defs/missing",
        "#no-such-anchor",
        "http://[",
    ],
)
def test_a_schema_with_a_ref_outside_itself_is_refused_naming_file_and_ref(
    tmp_path: Path, no_network: list[object], ref: str
) -> None:
    path = schema_file(tmp_path, {"type": "object", "properties": {"a": {"$ref": ref}}})
    with pytest.raises(InputError) as info:
        load_schema(path)
    assert info.value.exit_code == 2
    assert f"{path}: $ref {ref!r} does not resolve inside the schema" in str(info.value)
    assert no_network == []


def test_a_ref_that_leads_back_to_itself_is_refused(tmp_path: Path) -> None:
    path = schema_file(tmp_path, {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})
    with pytest.raises(InputError, match="a \\$ref that leads back to itself") as info:
        load_schema(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("schema", [{"$schema": []}, b'{"items": ' * 900 + b"{}" + b"}" * 900])
def test_a_schema_the_checker_cannot_take_is_refused_not_a_traceback(
    tmp_path: Path, schema: object
) -> None:
    path = schema_file(tmp_path, schema)
    with pytest.raises(InputError) as info:
        load_schema(path)
    assert str(path) in str(info.value)


def test_a_schema_with_local_refs_loads_and_judges_answers(
    tmp_path: Path, no_network: list[object]
) -> None:
    schema = load_schema(schema_file(tmp_path, LOCAL_REFS))
    schema_json = schema_text(schema)
    assert (
        answer_problem('{"label": "positive", "confidence": 0.5, "note": "ok"}', schema_json)
        is None
    )
    assert "label: 'maybe' is not one of" in (
        answer_problem('{"label": "maybe", "confidence": 0.5}', schema_json) or ""
    )
    assert "confidence: 7 is greater than the maximum of 1" in (
        answer_problem('{"label": "positive", "confidence": 7}', schema_json) or ""
    )
    assert "note: 1 is not of type 'string'" in (
        answer_problem('{"label": "positive", "confidence": 0, "note": 1}', schema_json) or ""
    )
    assert no_network == []


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"$ref": "https://example.invalid/x.json"}, "'https://example.invalid/x.json' does not"),
        ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "recurses without end"),
    ],
)
def test_judging_with_a_stored_schema_never_fetches_and_never_raises(
    no_network: list[object], schema: dict[str, Any], problem: str
) -> None:
    """A batch stored before load checked its references: its answers are judged invalid with
    the reason, the worker goes on, and nothing is fetched."""
    found = answer_problem('{"label": "positive"}', orjson.dumps(schema).decode())
    assert found is not None
    assert found.startswith("the schema cannot judge answers: ") and problem in found
    assert no_network == []


def test_a_problem_holds_no_control_characters_from_the_answer() -> None:
    """The problem names the answer's own keys and is stored as text: no NUL, no escapes."""
    schema_json = orjson.dumps({"additionalProperties": {"type": "integer"}}).decode()
    found = answer_problem('{"a\\u0000\\u001b[2J": "x"}', schema_json)
    assert found == "a[2J: 'x' is not of type 'integer'"
