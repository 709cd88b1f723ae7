"""Export lines have the shape of a real OpenAI Batch output file; CSV cells are safe."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson

from chatbatch.export import CSV_COLUMNS, csv_cells, jsonl_line

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "A"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def row(**kw: Any) -> SimpleNamespace:
    values: dict[str, Any] = {
        "id": 7,
        "custom_id": "test_0",
        "status": "succeeded",
        "remote_id": "task-1",
        "http_status": 200,
        "response": orjson.dumps(COMPLETION).decode(),
        "content": "A",
        "finish_reason": "stop",
        "response_model": "gpt-4o-mini",
        "model": "gpt-4o-mini",
        "prompt_tokens": 3,
        "completion_tokens": 1,
        "total_tokens": 4,
        "reasoning_tokens": 0,
        "cached_tokens": 0,
        "billed_units": 0,
        "error_code": None,
        "error_message": None,
        "submitted_at": datetime(2026, 1, 1, tzinfo=UTC),
        "completed_at": datetime(2026, 1, 1, 0, 1, tzinfo=UTC),
        "attempts": 1,
        "retries": 0,
        "ambiguous_submits": 0,
    }
    values.update(kw)
    return SimpleNamespace(**values)


def shape(obj: Any) -> Any:
    """The nested key structure of the envelope (not of the body)."""
    return {
        k: shape(v) if isinstance(v, dict) and k != "body" else type(v).__name__
        for k, v in obj.items()
    }


def test_success_line_matches_a_real_output_file(fixtures_dir: Path) -> None:
    real = orjson.loads((fixtures_dir / "kmmlu-batchoutput.jsonl").read_bytes().splitlines()[0])
    ours = orjson.loads(jsonl_line(row()))
    assert list(ours) == list(real)
    assert shape(ours) == shape(real)
    assert ours["response"]["body"] == COMPLETION
    assert ours["response"]["request_id"] == "task-1"


def test_failed_line_has_error_and_no_response() -> None:
    line = jsonl_line(
        row(
            status="failed",
            http_status=None,
            response=None,
            error_code="task_failed",
            error_message="boom",
        )
    )
    obj = orjson.loads(line)
    assert obj["response"] is None
    assert obj["error"] == {"code": "task_failed", "message": "boom"}


def test_rejected_line_keeps_the_providers_error_body() -> None:
    body = '{"error": {"message": "bad"}}'
    obj = orjson.loads(
        jsonl_line(
            row(
                status="failed",
                http_status=400,
                response=body,
                error_code="invalid",
                error_message="bad",
            )
        )
    )
    assert obj["response"] == {
        "status_code": 400,
        "request_id": "task-1",
        "body": {"error": {"message": "bad"}},
    }


def test_unfinished_request_says_so() -> None:
    obj = orjson.loads(jsonl_line(row(status="submitted", response=None, http_status=None)))
    assert obj["error"] == {"code": "submitted", "message": "request is submitted"}


def test_csv_neutralises_formulas_and_keeps_numbers() -> None:
    cells = dict(
        zip(
            CSV_COLUMNS,
            csv_cells(row(content="=HYPERLINK(1)", custom_id="@x")),
            strict=True,
        )
    )
    assert cells["content"] == "'=HYPERLINK(1)"
    assert cells["custom_id"] == "'@x"
    assert cells["total_tokens"] == 4
    assert cells["submitted_at"] == "2026-01-01T00:00:00+00:00"


def test_a_pretty_printed_body_still_makes_exactly_one_line() -> None:
    """JSON allows newlines only as whitespace between tokens, so the export may drop them; a
    provider answering pretty-printed JSON (or with a trailing newline) must not split a line."""
    pretty = (
        '{\r\n  "id": "chatcmpl-1",\n  "choices": [\n'
        '    {"message": {"content": "a\\nb"}}\n  ]\n}\n'
    )
    line = jsonl_line(row(response=pretty))
    assert line.count(b"\n") == 1 and line.endswith(b"}\n")
    assert orjson.loads(line)["response"]["body"] == orjson.loads(pretty)
    assert b'"a\\nb"' in line  # escapes inside strings are untouched
