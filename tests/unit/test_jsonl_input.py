"""Line parsing: every accepted shape, and a clear reason for every refusal."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatbatch.input.jsonl_input import (
    _FAST_RANGES,
    _FAST_TYPES,
    LineError,
    _prepare_fast,
    iter_lines,
    prepare_line,
    prepare_raw,
)
from chatbatch.input.schemas import ROLES

MESSAGES = [{"role": "user", "content": "hi"}]
CALLS = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
PARTS = [{"type": "text", "text": "hi"}]


def line(obj: object) -> str:
    return orjson.dumps(obj).decode()


def test_openai_batch_shape() -> None:
    text = line(
        {
            "custom_id": "r1",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5},
        }
    )
    req = prepare_line(text, 1, default_model=None)
    assert (req.custom_id, req.model) == ("r1", "gpt-4o-mini")
    assert orjson.loads(req.body) == {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5}


def test_plain_shape_with_default_model_and_line_number_id() -> None:
    req = prepare_line(line({"messages": MESSAGES}), 7, default_model="m1")
    assert (req.custom_id, req.model) == ("7", "m1")


def test_body_shape_without_method() -> None:
    req = prepare_line(
        line({"custom_id": "a", "body": {"model": "m", "messages": MESSAGES}}),
        1,
        default_model=None,
    )
    assert req.custom_id == "a"


def test_geekai_extensions_pass_through_untouched() -> None:
    extras = {
        "thinking": {"type": "enabled", "budget_tokens": 16000, "reasoning_effort": "medium"},
        "enable_search": True,
        "search_config": {"engine": "x", "count": 3},
        "json_mode": True,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "retries": 0,
        "sess_id": "123e4567-e89b-12d3-a456-426614174000",
        "some_future_flag": {"nested": [1, 2.5, None]},
    }
    req = prepare_line(line({"model": "m", "messages": MESSAGES, **extras}), 1, default_model=None)
    assert orjson.loads(req.body) == {"model": "m", "messages": MESSAGES, **extras}


def test_background_is_dropped_because_we_set_it() -> None:
    req = prepare_line(
        line({"model": "m", "messages": MESSAGES, "background": False}), 1, default_model=None
    )
    assert "background" not in orjson.loads(req.body)


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"model": "m"}, "messages: missing"),
        ({"model": "m", "messages": []}, "messages: must not be empty"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [{"content": "x"}]}, "role: missing"),
        ({"model": "m", "messages": MESSAGES, "stream": True}, '"stream": true'),
        ({"model": "m", "messages": MESSAGES, "temperature": "hot"}, "temperature"),
        ({"model": "m", "messages": MESSAGES, "max_tokens": 1.5}, "max_tokens"),
        ({"model": 5, "messages": MESSAGES}, "model"),
        ({"messages": MESSAGES}, 'missing "model"'),
        ({"custom_id": 5, "model": "m", "messages": MESSAGES}, "custom_id must be a string"),
        ({"custom_id": " ", "model": "m", "messages": MESSAGES}, "custom_id must not be empty"),
        ({"custom_id": "a", "body": "x"}, "body must be a JSON object"),
        ({"custom_id": "a", "method": "GET", "body": {}}, 'method must be "POST"'),
        ({"custom_id": "a", "url": "/v1/embeddings", "body": {}}, "url must be"),
        ({"custom_id": "a", "body": {}, "extra": 1}, "unexpected field(s) next to body: extra"),
    ],
)
def test_refusals_say_why(obj: object, reason: str) -> None:
    with pytest.raises(LineError) as info:
        prepare_line(line(obj), 1, default_model=None)
    assert reason in str(info.value)


def message_line(*messages: dict[str, Any], **params: object) -> dict[str, Any]:
    return {"model": "m", "messages": [*messages], **params}


USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (
            message_line({"role": "wizard", "content": "x"}),
            "messages.0.role: input should be 'system', 'developer', 'user', 'assistant', 'tool' "
            "or 'function'",
        ),
        (
            message_line(USER, {"role": "user"}),
            "messages.1.content: missing (a user message needs a text or a list of parts)",
        ),
        (
            message_line({"role": "system", "content": None}, USER),
            "messages.0.content: missing (a system message needs a text or a list of parts)",
        ),
        (
            message_line(USER, {"role": "assistant", "tool_calls": []}),
            "messages.1.content: missing (an assistant message needs it unless it has tool_calls)",
        ),
        (
            message_line({"role": "user", "content": []}),
            "messages.0.content: must not be an empty list of parts",
        ),
        (
            message_line({"role": "user", "content": ["hi"]}),
            'messages.0.content: every part must be an object, such as {"type": "text", "text": …}',
        ),
        (
            message_line(USER, {"role": "tool", "content": "4"}),
            "messages.1.tool_call_id: a tool message needs the id of the call it answers",
        ),
        (
            message_line(USER, {"role": "tool", "content": "4", "tool_call_id": 7}),
            "messages.1.tool_call_id: a tool message needs the id of the call it answers",
        ),
        (
            message_line(USER, max_tokens=-5),
            "max_tokens: input should be greater than or equal to 1",
        ),
        (
            message_line(USER, max_tokens=0),
            "max_tokens: input should be greater than or equal to 1",
        ),
        (
            message_line(USER, max_completion_tokens=0),
            "max_completion_tokens: input should be greater than or equal to 1",
        ),
        (
            message_line(USER, temperature=2.5),
            "temperature: input should be less than or equal to 2",
        ),
        (message_line(USER, temperature=-1), "temperature: input should be greater than or equal"),
        (message_line(USER, top_p=1.01), "top_p: input should be less than or equal to 1"),
        (message_line(USER, top_p=-0.1), "top_p: input should be greater than or equal to 0"),
        (message_line(USER, n=0), "n: input should be greater than or equal to 1"),
    ],
)
def test_what_the_provider_would_refuse_or_misread_is_refused_with_the_reason(
    obj: dict[str, Any], reason: str
) -> None:
    raw = orjson.dumps({"custom_id": "r1", "body": obj})
    assert _prepare_fast(orjson.loads(raw), 1, None) is None
    with pytest.raises(LineError) as info:
        prepare_raw(raw, 1, default_model=None)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "obj",
    [
        message_line(
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "2+2?"}]},
            {"role": "assistant", "tool_calls": CALLS},
            {"role": "tool", "content": "4", "tool_call_id": "c1"},
            {"role": "assistant", "content": None, "tool_calls": CALLS},
            {"role": "tool", "content": [{"type": "text", "text": "4"}], "tool_call_id": "c1"},
            {"role": "assistant", "content": "4"},
        ),
        message_line(
            USER,
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": ""}},
            {"role": "function", "name": "f", "content": "4"},
        ),
        message_line({"role": "user", "content": ""}),
        message_line(USER, temperature=0, top_p=0, max_tokens=1, max_completion_tokens=1, n=1),
        message_line(USER, temperature=2, top_p=1, max_tokens=2**40, n=8),
        message_line(USER, temperature=0.7, top_p=0.95, n=None, max_tokens=None),
    ],
)
def test_what_the_provider_takes_loads_on_the_fast_path(obj: dict[str, Any]) -> None:
    raw = orjson.dumps(obj)
    fast = _prepare_fast(orjson.loads(raw), 1, None)
    assert fast is not None and fast == slow(raw, 1, None)


@pytest.mark.parametrize("char", ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x9b"])
@pytest.mark.parametrize("shape", ["plain", "envelope"])
def test_control_characters_in_ids_and_models_are_refused_on_both_paths(
    char: str, shape: str
) -> None:
    """Ids and model names go into text columns and one-line messages: no NUL, ESC, CR…"""
    reason = "must not contain control characters such as NUL, tab or newline"
    code = f"(found U+{ord(char):04X})"
    for field, obj in (
        ("model", {"model": f"gpt{char}4", "messages": MESSAGES}),
        ("custom_id", {"custom_id": f"r{char}1", "model": "m", "messages": MESSAGES}),
        ("model", {"messages": MESSAGES}),  # filled in from the default model
    ):
        if shape == "envelope":
            obj = {"custom_id": obj.pop("custom_id", "e"), "body": obj}
        raw = orjson.dumps(obj)
        with pytest.raises(LineError) as info:
            prepare_raw(raw, 1, default_model=f"dm{char}")
        assert str(info.value) == f"{field} {reason} {code}"
        assert _prepare_fast(orjson.loads(raw), 1, f"dm{char}") is None


@pytest.mark.parametrize("text", ["{", "[1, 2]", '"str"', "nul", "{'a': 1}"])
def test_not_an_object(text: str) -> None:
    with pytest.raises(LineError):
        prepare_line(text, 1, default_model="m")


def test_iter_lines_handles_bom_crlf_blank_lines_bad_utf8_and_long_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    long_line = b'{"x": "' + b"a" * 5000 + b'"}\n'
    path.write_bytes(b"\xef\xbb\xbf{}\r\n\r\n   \n\xff\xfe\n" + long_line + b"{}")
    rows = list(iter_lines(path, max_line_bytes=1024))
    assert rows[0] == (1, "{}\r\n", None)
    assert rows[1][0] == 4 and "invalid UTF-8" in (rows[1][2] or "")
    assert rows[2][0] == 5 and "longer than the limit" in (rows[2][2] or "")
    assert rows[3] == (6, "{}", None)


# --- the fast path (orjson + explicit checks) must agree with the pydantic path ---------------

ODD_VALUES = [
    *["", " ", "m", "POST", "GET", "/v1/chat/completions", "/chat/completions", "\x00x"],
    *["a\x1bb", "\t", "x\r", "\x85", "é"],
    *[[], ["a"], ["a", 1], {}, {"a": 1}, 0, -1, 1.5, 2**70, True, False, None, "x" * 513],
    *[1, 2, 0.5, 2.5, -0.5, 1.0],
]
MESSAGE_VARIANTS = [
    *[MESSAGES, [], [{}], ["x"], "hi", None, [{"role": 1}], [{"role": ""}]],
    *[[{"role": r, "content": "x"}] for r in ("u", "wizard", "User", *ROLES)],
    *[[{"role": "user", "content": c}] for c in (1, [], None, {}, True, "", ["x"], PARTS)],
    [{"role": "user", "content": "a", "name": "n"}, {"role": "assistant"}],
    *[[{"role": "assistant", **m}] for m in ({"tool_calls": CALLS}, {"tool_calls": []})],
    [{"role": "assistant", "content": None, "tool_calls": CALLS, "function_call": 1}],
    [{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}],
    [{"role": "user", "tool_calls": CALLS}, {"role": "tool", "content": "4"}],
    *[[{"role": "tool", "content": c, "tool_call_id": i}] for c in ("4", None) for i in ("c", "")],
]
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4)
)
values = json_leaves | st.sampled_from(ODD_VALUES)
body_keys = st.sampled_from([*sorted(_FAST_TYPES), "model", "background", "other", "custom_id"])


@st.composite
def near_valid_lines(draw: st.DrawFn) -> dict[str, Any]:
    """A valid request with a few of its fields changed, in either shape."""
    body: dict[str, Any] = {"model": "m", "messages": draw(st.sampled_from(MESSAGE_VARIANTS))}
    if draw(st.booleans()):
        del body["model"]
    body.update(draw(st.dictionaries(body_keys, values, max_size=3)))
    top: dict[str, Any] = {}
    if draw(st.booleans()):
        top["custom_id"] = draw(values)
    if not draw(st.booleans()):
        return {**top, **body}
    envelope = st.sampled_from(["method", "url", "extra"])
    return {**top, "body": body, **draw(st.dictionaries(envelope, values, max_size=2))}


def slow(raw: bytes, line_no: int, default_model: str | None) -> tuple[str, str, bytes] | str:
    """``prepare_line``'s answer: the request or the reason."""
    try:
        req = prepare_line(raw.decode(), line_no, default_model=default_model)
    except LineError as exc:
        return str(exc)
    return req.custom_id, req.model, req.body.encode()


@settings(max_examples=3000, deadline=None)
@given(
    obj=near_valid_lines(),
    default_model=st.sampled_from([None, "", "dm"]),
    crlf=st.booleans(),
)
def test_fast_path_agrees_with_pydantic(
    obj: dict[str, Any], default_model: str | None, crlf: bool
) -> None:
    raw = json.dumps(obj, ensure_ascii=False).encode() + (b"\r\n" if crlf else b"\n")
    expected = slow(raw, 9, default_model)
    fast = _prepare_fast(orjson.loads(raw), 9, default_model)
    if fast is not None:
        assert fast == expected  # the fast path only ever accepts what pydantic accepts, as is
    try:
        got: tuple[str, str, bytes] | str | None = prepare_raw(raw, 9, default_model=default_model)
    except LineError as exc:
        got = str(exc)
    assert got == expected


@pytest.mark.parametrize(
    "raw",
    [b"", b"   \r\n", b"\xc2\xa0\n", b"\x0c\n"],
)
def test_blank_lines_are_skipped_as_before(raw: bytes) -> None:
    assert prepare_raw(raw, 1, default_model="m") is None


def test_bad_utf8_and_bad_json_keep_their_reasons() -> None:
    with pytest.raises(LineError, match="invalid UTF-8 at byte 13"):
        prepare_raw(b'{"messages": \xff}', 1, default_model="m")
    with pytest.raises(LineError, match="invalid JSON"):
        prepare_raw(b"{not json", 1, default_model="m")


def test_real_files_and_common_shapes_take_the_fast_path(fixtures_dir: Path) -> None:
    lines = (fixtures_dir / "mitre-batchinput.jsonl").read_bytes().splitlines()
    common = [
        {"model": "m", "messages": MESSAGES, "temperature": 0, "max_tokens": 5, "stop": ["x"]},
        {"custom_id": "a", "body": {"model": "m", "messages": MESSAGES, "thinking": {}}},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
    ]
    for raw in [*lines, *(orjson.dumps(obj) for obj in common)]:
        fast = _prepare_fast(orjson.loads(raw), 1, "dm")
        assert fast is not None and fast == slow(raw, 1, "dm")


def single_changes() -> list[dict[str, Any]]:
    """A valid line with one field set to each awkward value, field by field."""
    base = {"model": "m", "messages": MESSAGES}
    lines: list[dict[str, Any]] = [{"messages": m, "model": "m"} for m in MESSAGE_VARIANTS]
    for key in [*_FAST_TYPES, "model", "background", "other"]:
        lines += [{**base, key: value} for value in ODD_VALUES]
    lines += [{"custom_id": value, **base} for value in ODD_VALUES]
    for key in ("method", "url", "extra"):
        lines += [{"custom_id": "a", "body": base, key: value} for value in ODD_VALUES]
    lines += [{"custom_id": "a", "body": value} for value in ODD_VALUES]
    return lines


@pytest.mark.parametrize("default_model", [None, "dm"])
def test_fast_path_agrees_with_pydantic_field_by_field(default_model: str | None) -> None:
    accepted = 0
    for obj in single_changes():
        raw = json.dumps(obj).encode()
        expected = slow(raw, 3, default_model)
        fast = _prepare_fast(orjson.loads(raw), 3, default_model)
        assert fast is None or fast == expected, obj
        accepted += fast is not None
    assert accepted > 100  # the fast path is really taken


def test_the_fast_path_knows_every_typed_field_of_the_schema() -> None:
    """If ``ChatBody`` or ``Message`` gains a field or a constraint, the fast path (which checks
    their types itself) must learn it too."""
    from chatbatch.input.schemas import ChatBody, Message

    assert set(ChatBody.model_fields) == {*_FAST_TYPES, "model", "messages"}
    for name in _FAST_TYPES:
        limits = {type(m).__name__: m for m in ChatBody.model_fields[name].metadata}
        low, high = _FAST_RANGES.get(name, (None, None))
        assert set(limits) <= {"Ge", "Le"}, name
        assert (getattr(limits.get("Ge"), "ge", None), getattr(limits.get("Le"), "le", None)) == (
            low,
            None if high == math.inf else high,
        ), name
    assert set(Message.model_fields) == {"role", "content"}
    assert ChatBody.model_config.get("extra") == Message.model_config.get("extra") == "allow"
