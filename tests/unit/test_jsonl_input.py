"""Line parsing: every accepted shape, and a clear reason for every refusal."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from chatbatch.jsonl_input import LineError, iter_lines, prepare_line

MESSAGES = [{"role": "user", "content": "hi"}]


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
