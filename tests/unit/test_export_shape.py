"""Export lines have the shape of a real OpenAI Batch output file; CSV cells are safe."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatbatch.reporting.export.layout import (
    CSV_COLUMNS,
    ExportError,
    csv_writer,
    jsonl_line,
    layout_for,
    parse_statuses,
    value_cell,
)
from chatbatch.reporting.export.postgres import _quoted
from chatbatch.reporting.export.python import csv_cells

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
        "reused_from": None,
        "tool_calls": None,
        "reasoning_content": None,
        "citations": None,
        "other_contents": None,
        "provider": "default",
        "schema_valid": None,
        "schema_error": None,
        "record": None,
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


@pytest.mark.parametrize("status", ["queued", "submitting", "submitted"])
def test_an_unfinished_request_is_exported_as_unfinished_not_as_an_error(status: str) -> None:
    """Whatever transient error it met on its way (a 429, a poll that failed, a rejected body
    kept for a re-ask), a request with no outcome yet is ``unfinished``, its status named, and
    its CSV row has its real status and empty error cells."""
    for leftovers in (
        {"error_code": None, "error_message": None, "response": None, "http_status": None},
        {"error_code": "rate_limited", "error_message": "429", "http_status": 429},
        {"error_code": None, "error_message": "last poll: boom", "response": '{"e": 1}'},
    ):
        unfinished = row(status=status, **leftovers)
        obj = orjson.loads(jsonl_line(unfinished))
        assert obj["response"] is None
        assert obj["error"] == {
            "code": "unfinished",
            "message": f"not finished yet (status {status})",
        }
        cells = dict(zip(CSV_COLUMNS, csv_cells(unfinished), strict=True))
        assert cells["status"] == status
        assert cells["error_code"] is None and cells["error_message"] is None
    finished = row(status="failed", error_code="rate_limited", error_message="429", response=None)
    assert dict(zip(CSV_COLUMNS, csv_cells(finished), strict=True))["error_code"] == "rate_limited"


def test_export_statuses_are_checked_names() -> None:
    assert parse_statuses(" failed, Expired ,failed") == ("failed", "expired")
    assert parse_statuses("queued,submitting,submitted,reused") == (
        "queued",
        "submitting",
        "submitted",
        "reused",
    )
    for bad, says in (("failed,finished", "finished; choose from queued, "), (" , ", "nothing")):
        with pytest.raises(ExportError, match=f"--status: {says}") as raised:
            parse_statuses(bad)
        assert raised.value.exit_code == 2


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


def test_a_reused_answer_is_written_as_the_success_it_copies(fixtures_dir: Path) -> None:
    real = orjson.loads((fixtures_dir / "kmmlu-batchoutput.jsonl").read_bytes().splitlines()[0])
    reused = row(status="reused", reused_from="=nightly/r7", prompt_tokens=None, total_tokens=None)
    ours = orjson.loads(jsonl_line(reused))
    assert shape(ours) == shape(real)
    assert ours["error"] is None and ours["response"]["body"] == COMPLETION
    assert jsonl_line(reused) == jsonl_line(row())
    cells = dict(zip(CSV_COLUMNS, csv_cells(reused), strict=True))
    assert cells["status"] == "reused" and cells["content"] == "A"
    assert cells["reused_from"] == "'=nightly/r7" and cells["total_tokens"] is None
    assert dict(zip(CSV_COLUMNS, csv_cells(row()), strict=True))["reused_from"] is None


def test_default_columns_of_plain_record_and_schema_batches() -> None:
    assert layout_for(None, None).header == list(CSV_COLUMNS)
    plain_schema = layout_for(None, ["label", "confidence"]).header
    assert plain_schema[:5] == ["custom_id", "label", "confidence", "schema_valid", "schema_error"]
    assert plain_schema[5:] == list(CSV_COLUMNS[1:])
    records = layout_for(["text", "stars"], ["label"]).header
    assert records[:5] == ["text", "stars", "label", "schema_valid", "schema_error"]
    assert records[5:] == list(CSV_COLUMNS)


def test_clashing_names_are_prefixed() -> None:
    layout = layout_for(["text", "status", "label"], ["label", "content", "text", "schema_error"])
    names = [(c.name, c.kind, c.key) for c in layout.columns]
    assert names[:3] == [
        ("text", "record", "text"),
        ("status", "record", "status"),
        ("label", "record", "label"),
    ]
    assert names[3:7] == [
        ("answer.label", "answer", "label"),
        ("answer.content", "answer", "content"),
        ("answer.text", "answer", "text"),
        ("answer.schema_error", "answer", "schema_error"),
    ]
    assert ("output.status", "output", "status") in names
    assert len(set(layout.header)) == len(layout.header)


def test_columns_are_picked_in_the_order_given() -> None:
    layout = layout_for(["text"], ["label"]).select(["label", "text", "total_tokens"])
    assert [(c.kind, c.key) for c in layout.columns] == [
        ("answer", "label"),
        ("record", "text"),
        ("output", "total_tokens"),
    ]
    with pytest.raises(
        ExportError,
        match=r"unknown column\(s\): nope, lable; this batch has: "
        r"text, label, schema_valid",
    ):
        layout_for(["text"], ["label"]).select(["text", "nope", "lable"])
    with pytest.raises(ExportError, match="more than once: text"):
        layout_for(["text"], None).select(["text", "status", "text"])
    with pytest.raises(ExportError, match="no column"):
        layout_for(["text"], None).select([])


def test_value_cells_are_text_as_given_or_compact_json() -> None:
    assert value_cell(None) is None
    assert value_cell("") == ""
    assert value_cell("plain, text") == "plain, text"
    assert value_cell(-0.5) == "-0.5" and value_cell(3) == "3" and value_cell(True) == "true"
    assert value_cell({"a": [1, "b"]}) == '{"a":[1,"b"]}'
    assert value_cell([1, 2]) == "[1,2]"
    assert value_cell(2**70) == str(2**70)
    for formula in ("=1+1", "+A1", "-2+3", "@SUM(A1)", "\tx", "\rx"):
        assert value_cell(formula) == "'" + formula
    for number in ("-0.5", "+1", "-1e3", "-.5"):  # text that is a number cannot be a formula
        assert value_cell(number) == number


def test_csv_rows_quote_every_cell_holding_cr_or_lf_and_end_with_lf() -> None:
    """On every Python: 3.11's ``csv.writer`` with an LF terminator leaves a bare CR unquoted,
    so a spreadsheet would start a new row there (and run a formula after it)."""
    buffer = io.StringIO()
    writer = csv_writer(buffer)
    writer.writerow(["a\rb", 'ok\r=HYPERLINK("x")', "a\r\nb", "'\rx", "x\r", "y\n", "p", None, 3])
    writer.writerow([""])
    assert buffer.getvalue() == (
        '"a\rb","ok\r=HYPERLINK(""x"")","a\r\nb","\'\rx","x\r","y\n",p,,3\n""\n'
    )


@given(st.none() | st.text(alphabet=st.sampled_from(list("ab ,\"\n\r'=-é\t"))))
def test_cells_made_for_postgresql_are_quoted_as_csv_writer_quotes_them(cell: str | None) -> None:
    buffer = io.StringIO()
    csv_writer(buffer).writerow([cell, "x"])
    assert buffer.getvalue() == _quoted(cell) + ",x\n"
    assert _quoted(cell).startswith('"') == any(char in (cell or "") for char in ',"\r\n')
