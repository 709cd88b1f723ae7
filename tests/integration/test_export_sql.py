"""The PostgreSQL export (lines built in SQL) writes byte for byte what the Python writers write
for the same rows, on rows chosen to be awkward and on random ones."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, insert

from chatbatch.reporting.export import export_batch
from chatbatch.reporting.export.layout import STATUS_NAMES
from chatbatch.reporting.export.postgres import export_postgres
from chatbatch.reporting.export.python import export_python
from chatbatch.store.models import batches_table, requests_table

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "A\u0000\\n\u00e9😀"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
PRETTY = (
    '{\r\n  "id": "x",\n  "choices": [\n    {"message": {"content": "a\\nb \\\\ \\""}}\n  ]\n}\n'
)

ROWS: list[dict[str, Any]] = [
    {"status": "succeeded", "response": orjson.dumps(COMPLETION).decode(), "content": "A\\é😀"},
    {"status": "succeeded", "response": PRETTY, "content": "a\nb", "http_status": None},
    {"status": "succeeded", "response": '  {"a": 1}\t', "http_status": 0},
    {"status": "succeeded", "response": None, "remote_id": None},
    {"status": "queued", "remote_id": None, "attempts": 0},
    {"status": "submitted", "response": None, "error_code": "", "error_message": ""},
    {"status": "failed", "error_code": "task_failed", "error_message": 'boom, "quoted"\r\n'},
    {"status": "failed", "http_status": 400, "response": '{"error": {"message": "bad"}}'},
    {"status": "failed", "http_status": 503, "response": "<html>not json</html>"},
    {"status": "failed", "http_status": 429, "response": '{"b":1,\n"a":[1.50, 1e2]}'},
    {"status": "failed", "http_status": 200, "response": '{"partial": true}'},
    {"status": "expired", "error_message": None, "error_code": None},
    {"status": "cancelled", "response": None, "http_status": 404},
    {"status": "failed", "custom_id": "\x01", "content": "\x01x\n\x01y", "error_message": "\x01"},
    {"status": "reused", "response": PRETTY, "remote_id": None, "reused_from": 2**62},
    {"status": "reused", "response": '{"a": 1}', "prompt_tokens": None, "schema_valid": False},
    {"status": "failed", "custom_id": "a\rb", "content": "\rx", "error_message": "x\r=SUM(A1)"},
    {"status": "succeeded", "content": "a\r\nb", "finish_reason": "x\r", "remote_id": "\r"},
    # not finished, with what their way left behind: a 429, a rejected body, a failed poll
    {"status": "queued", "error_code": "rate_limited", "error_message": "429", "http_status": 429},
    {"status": "submitting", "http_status": 400, "response": '{"error": {"message": "bad"}}'},
    {"status": "submitted", "error_message": "last poll: x", "http_status": 503, "response": "<"},
]
UNFINISHED_AT = [4, 5, 18, 19, 20]  # the indexes in ROWS of requests not finished yet
FORMULAS = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "'already", "a=b", "", " =x"]
# Unquoted, a CR anywhere in a cell ends the row for a spreadsheet (and for csv.reader), and a
# formula after it would escape the leading quote: a bare CR, one before a formula, CRLF, a CR
# first and last.
CR_TEXTS = ["a\rb", 'ok\r=HYPERLINK("http://x.test","y")', "a\r\nb", "\r=1+1", "x\r", "\r"]


def insert_rows(conn: Connection, rows: list[dict[str, Any]], **batch: Any) -> str:
    """A batch of ``rows`` (request columns over defaults); ``batch`` sets batch columns."""
    batch_id = "batch_" + uuid.uuid4().hex
    columns = {"name": batch_id, "status": "running", "total": len(rows), "created_at": NOW}
    conn.execute(insert(batches_table).values(id=batch_id, **(columns | batch)))
    values = []
    for line_no, row in enumerate(rows, 1):
        values.append(
            {
                "batch_id": batch_id,
                "line_no": line_no * 3,  # gaps, as blank input lines leave them
                "custom_id": f"c{line_no}",
                "model": "gpt-4o-mini",
                "body": "{}",
                "status": "succeeded",
                "due_at": NOW,
                "remote_id": f"task-{line_no}",
                "http_status": 200,
                "submitted_at": NOW,
                "completed_at": datetime(2026, 3, 1, 12, 0, 1, 250, tzinfo=UTC),
                "attempts": 1,
                "retries": line_no % 3,
                "ambiguous_submits": line_no % 2,
                "prompt_tokens": 3,
                "total_tokens": None,
                "response": None,
                "content": None,
                "finish_reason": None,
                "response_model": None,
                "error_code": None,
                "error_message": None,
                "record": None,
                "schema_valid": None,
                "schema_error": None,
                "reused_from": None,
                **row,
            }
        )
    if values:
        conn.execute(insert(requests_table), values)
    return batch_id


def python_export(conn: Connection, batch_id: str, fmt: str, **options: Any) -> bytes:
    """What the Python writers (the SQLite path) make of the same rows."""
    out = io.BytesIO()
    export_python(conn, batch_id, out, fmt, **options)
    return out.getvalue()


def sql_export(conn: Connection, batch_id: str, fmt: str, **options: Any) -> tuple[bytes, int]:
    out = io.BytesIO()
    count = export_postgres(conn, batch_id, out, fmt, **options)
    return out.getvalue(), count


def both(
    db: Engine,
    rows: list[dict[str, Any]],
    fmt: str,
    *,
    batch: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[bytes, bytes, int]:
    """The SQL export and the Python one of a new batch of ``rows``, and the SQL count."""
    with db.begin() as conn:
        batch_id = insert_rows(conn, rows, **(batch or {}))
    with db.connect() as conn:
        ours, count = sql_export(conn, batch_id, fmt, **options)
    with db.connect() as conn:
        reference = python_export(conn, batch_id, fmt, **options)
    return ours, reference, count


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("chunked_rows", [True, False], ids=["stream", "cursor"])
@pytest.mark.parametrize("fetch_rows", [2000, 3])
def test_awkward_rows_are_byte_identical(
    db: Engine, monkeypatch: pytest.MonkeyPatch, fmt: str, chunked_rows: bool, fetch_rows: int
) -> None:
    """Through libpq's chunked rows and through the server-side cursor older libpqs use, in
    one block and in blocks of three rows."""
    if chunked_rows and psycopg.pq.version() < 170000:
        pytest.skip("this libpq has no chunked-rows mode")
    monkeypatch.setattr("chatbatch.reporting.export.postgres.CHUNKED_ROWS", chunked_rows)
    monkeypatch.setattr("chatbatch.reporting.export.postgres.FETCH_ROWS", fetch_rows)
    ours, reference, count = both(db, ROWS, fmt)
    assert count == len(ROWS)
    assert ours == reference


def test_jsonl_keeps_nul_escapes_one_line_per_row_and_input_order(db: Engine) -> None:
    ours, _, _ = both(db, ROWS, "jsonl")
    lines = ours.split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(ROWS) + 1
    objects = [orjson.loads(line) for line in lines[:-1]]
    assert [o["custom_id"] for o in objects] == [
        row.get("custom_id", f"c{i}") for i, row in enumerate(ROWS, 1)
    ]
    assert objects[0]["response"]["body"] == COMPLETION
    assert b"\\u0000" in lines[0]  # the provider's NUL survives, escaped as it came
    assert objects[1]["response"]["body"] == orjson.loads(PRETTY)
    assert objects[7]["response"]["body"] == {"error": {"message": "bad"}}  # finished in Python
    assert objects[8]["response"]["body"] == "<html>not json</html>"


def test_unfinished_requests_are_exported_as_unfinished_by_both_paths(db: Engine) -> None:
    """A request with no outcome yet is no error named after its status, whatever transient
    error it met on its way: in JSONL its error is ``unfinished`` (status in the message) with
    no response; in CSV its status is the real one and the error cells are empty."""
    for fmt in ("jsonl", "csv"):
        ours, reference, _ = both(db, ROWS, fmt)
        assert ours == reference
        if fmt == "jsonl":
            objects = [orjson.loads(line) for line in ours.splitlines()]
        else:
            objects = list(csv.DictReader(io.StringIO(ours.decode(), newline="")))
        for i, obj in enumerate(objects):
            status = ROWS[i]["status"]
            if i not in UNFINISHED_AT:
                assert status not in ("queued", "submitting", "submitted")
            elif fmt == "jsonl":
                assert obj["response"] is None
                message = f"not finished yet (status {status})"
                assert obj["error"] == {"code": "unfinished", "message": message}
            else:
                assert obj["status"] == status
                assert obj["error_code"] == obj["error_message"] == ""


STATUS_CHOICES = [
    ["failed"],
    ["succeeded", "reused"],
    ["queued", "submitting", "submitted", "expired"],
    ["cancelled", "failed", "cancelled"],
    ["submitting"],
]


@pytest.mark.parametrize("statuses", STATUS_CHOICES, ids=repr)
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("chunked_rows", [True, False], ids=["stream", "cursor"])
def test_a_status_filter_exports_only_those_requests_identically(
    db: Engine, monkeypatch: pytest.MonkeyPatch, statuses: list[str], fmt: str, chunked_rows: bool
) -> None:
    if chunked_rows and psycopg.pq.version() < 170000:
        pytest.skip("this libpq has no chunked-rows mode")
    monkeypatch.setattr("chatbatch.reporting.export.postgres.CHUNKED_ROWS", chunked_rows)
    monkeypatch.setattr("chatbatch.reporting.export.postgres.FETCH_ROWS", 2)
    ours, reference, count = both(db, ROWS, fmt, statuses=statuses)
    assert ours == reference
    wanted = [row.get("custom_id", f"c{i}") for i, row in enumerate(ROWS, 1)]
    wanted = [name for name, row in zip(wanted, ROWS, strict=True) if row["status"] in statuses]
    assert count == len(wanted) > 0
    if fmt == "jsonl":
        assert [orjson.loads(line)["custom_id"] for line in ours.splitlines()] == wanted
    else:
        table = list(csv.DictReader(io.StringIO(ours.decode(), newline="")))
        assert {row["status"] for row in table} <= set(statuses)
        assert len(table) == count


def test_csv_neutralises_every_formula_prefix(db: Engine) -> None:
    rows = [
        {"status": "failed", "custom_id": f"id{i}{v}", "content": v, "error_message": v}
        for i, v in enumerate(FORMULAS)
    ]
    rows += [{"custom_id": v or "blank", "remote_id": v} for v in FORMULAS]
    rows += [{"response_model": v or None, "model": v or "m", "finish_reason": v} for v in FORMULAS]
    ours, reference, _ = both(db, rows, "csv")
    assert ours == reference
    for cell in (b"'=1+1", b"'+1", b"'-1", b"'@SUM(A1)", b"'\tx", b"'\rx"):
        assert cell in ours
    assert b"'a=b" not in ours and b"' =x" not in ours


@pytest.mark.parametrize("columns", [None, ["content"], ["error_message", "status"]], ids=repr)
def test_csv_quotes_every_cell_holding_a_cr(db: Engine, columns: list[str] | None) -> None:
    """Both paths quote a cell with a CR anywhere in it, so reading the file back gives one row
    per request with the CR inside its cell, and a formula after a CR stays inside that cell."""
    rows = [
        {"custom_id": f"{text}{i}", "content": text, "error_message": text, "remote_id": text}
        for i, text in enumerate(CR_TEXTS)
    ]
    ours, reference, _ = both(db, rows, "csv", columns=columns)
    assert ours == reference
    table = list(csv.DictReader(io.StringIO(ours.decode(), newline="")))
    assert len(table) == len(rows)
    shown = ["'" + text if text.startswith("\r") else text for text in CR_TEXTS]
    for name in {"content", "error_message", "remote_id"}.intersection(table[0]):
        assert [row[name] for row in table] == shown
    if columns is None:
        assert [row["custom_id"] for row in table] == [f"{t}{i}" for i, t in enumerate(shown)]
    header, _ = ours.split(b"\n", 1)  # rows end with LF, as ever
    assert not header.endswith(b"\r") and not ours.endswith(b"\r\n")


def test_export_batch_takes_the_sql_path_on_postgresql(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def recording(conn: Connection, batch_id: str, out: Any, fmt: str, **options: Any) -> int:
        calls.append(fmt)
        return export_postgres(conn, batch_id, out, fmt, **options)

    monkeypatch.setattr("chatbatch.reporting.export.postgres.export_postgres", recording)
    with db.begin() as conn:
        batch_id = insert_rows(conn, ROWS[:3])
    out = io.BytesIO()
    with db.connect() as conn:
        assert export_batch(conn, batch_id, out, "csv") == 3
    assert calls == ["csv"]
    with db.connect() as conn:
        assert out.getvalue() == python_export(conn, batch_id, "csv")


def test_an_empty_batch_exports_nothing_but_the_csv_header(db: Engine) -> None:
    for fmt, expected in (("jsonl", b""), ("csv", b"custom_id,status,content")):
        ours, reference, count = both(db, [], fmt)
        assert count == 0 and ours == reference and ours.startswith(expected)


texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
) | st.sampled_from(["\x01", "\x01x", "a\n\x01", "\\", "\\N", "\\.", *CR_TEXTS])
maybe_texts = st.none() | texts | st.sampled_from(FORMULAS)
json_bodies = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
).map(lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2).decode())
random_rows = st.fixed_dictionaries(
    {
        "custom_id": texts.filter(bool),
        "status": st.sampled_from(
            ["succeeded", "reused", "failed", "expired", "queued", "submitting", "submitted"]
        ),
        "http_status": st.none() | st.sampled_from([0, 200, 400, 404, 500]),
        "response": st.none() | json_bodies | texts,
        "content": maybe_texts,
        "finish_reason": maybe_texts,
        "response_model": maybe_texts,
        "model": texts,
        "error_code": maybe_texts,
        "error_message": maybe_texts,
        "remote_id": maybe_texts,
        "completed_at": st.none()
        | st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ),
    }
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(random_rows, min_size=1, max_size=6, unique_by=lambda r: r["custom_id"]),
    statuses=st.none() | st.lists(st.sampled_from(STATUS_NAMES), min_size=1, max_size=3),
)
def test_random_rows_are_byte_identical(
    db: Engine, rows: list[dict[str, Any]], statuses: list[str] | None
) -> None:
    for row in rows:  # a succeeded row's response was parsed on arrival: it is JSON
        if row["status"] in ("succeeded", "reused") and row["response"] is not None:
            row["response"] = orjson.dumps(row["response"]).decode()
    for fmt in ("jsonl", "csv"):
        ours, reference, count = both(db, rows, fmt, statuses=statuses)
        assert ours == reference
        assert count == sum(statuses is None or row["status"] in statuses for row in rows)


@pytest.mark.parametrize("chunked_rows", [True, False], ids=["stream", "cursor"])
def test_a_failed_write_leaves_a_usable_connection(
    db: Engine, monkeypatch: pytest.MonkeyPatch, chunked_rows: bool
) -> None:
    monkeypatch.setattr("chatbatch.reporting.export.postgres.CHUNKED_ROWS", chunked_rows)
    monkeypatch.setattr("chatbatch.reporting.export.postgres.FETCH_ROWS", 3)

    class DiskFull(io.BytesIO):
        def write(self, data: Any) -> int:
            if self.tell():
                raise OSError("disk full")
            return super().write(data)

    with db.begin() as conn:
        batch_id = insert_rows(conn, ROWS)
    with db.connect() as conn, pytest.raises(OSError, match="disk full"):
        export_postgres(conn, batch_id, DiskFull(), "jsonl")
    with db.connect() as conn:
        ours, count = sql_export(conn, batch_id, "jsonl")
        assert count == len(ROWS) and ours == python_export(conn, batch_id, "jsonl")


GOLD_BATCH = {
    "record_columns": '["text", "stars"]',
    "response_schema": '{"type": "object", "properties": {"label": {"type": "string"}}}',
    "gold_column": "stars",
    "gold_field": "label",
}
# (status, schema_valid, gold in the record, answer content, the gold_match cell)
GOLD_CASES = [
    ("succeeded", True, "Positive", '{"label": " positive "}', "true"),  # trimmed, caseless
    ("succeeded", True, "4", '{"label": 4.0}', "true"),  # numbers as numbers
    ("succeeded", True, "neutral", '```json\n{"label": "negative"}\n```', "false"),
    ("succeeded", False, "negative", '{"label": "negative"}', "false"),  # broke the schema
    ("failed", None, "negative", None, "false"),  # unanswered counts as disagreement
    ("reused", True, "negative", '{"label": "negative"}', "true"),
    ("succeeded", True, "", '{"label": "x"}', ""),  # no gold label
    ("succeeded", True, None, '{"label": "x"}', ""),
    ("queued", None, "negative", None, ""),  # not finished
    ("succeeded", True, "=1+1", '{"label": "=1+1"}', "true"),
]


@pytest.mark.parametrize("columns", [None, ["gold_match", "stars"], ["text", "gold_match"]])
def test_gold_match_is_the_same_on_both_paths_and_scores_as_status_does(
    db: Engine, columns: list[str] | None
) -> None:
    rows = [
        {
            "status": status,
            "schema_valid": valid,
            "content": content,
            "record": orjson.dumps(
                {"text": f"review {i}", **({} if gold is None else {"stars": gold})}
            ).decode(),
        }
        for i, (status, valid, gold, content, _) in enumerate(GOLD_CASES)
    ]
    ours, reference, count = both(db, rows, "csv", batch=GOLD_BATCH, columns=columns)
    assert ours == reference and count == len(rows)
    exported = list(csv.DictReader(io.StringIO(ours.decode())))
    assert [row["gold_match"] for row in exported] == [case[-1] for case in GOLD_CASES]


FURTHER = [
    None,
    ["second", "third"],
    ["=1+1", None],
    ['a,b "q"\r\nline', "\x01"],
]


@pytest.mark.parametrize("columns", [None, ["custom_id", "content_3", "content_2"]])
def test_further_choices_and_answer_extras_are_the_same_on_both_paths(
    db: Engine, columns: list[str] | None
) -> None:
    rows = [
        {
            "other_contents": None if others is None else orjson.dumps(others).decode(),
            "choices": None if others is None else len(others) + 1,
            "tool_calls": '[{"id": "c", "type": "function"}]' if i == 1 else None,
            "reasoning_content": "=because" if i == 2 else None,
            "citations": '["https://x.test/1"]' if i == 3 else None,
        }
        for i, others in enumerate(FURTHER)
    ]
    ours, reference, _ = both(db, rows, "csv", batch={"max_choices": 3}, columns=columns)
    assert ours == reference
    exported = list(csv.DictReader(io.StringIO(ours.decode(), newline="")))
    assert [row["content_3"] for row in exported] == ["", "third", "", "\x01"]
    assert exported[3]["content_2"] == 'a,b "q"\r\nline'
    if columns is None:
        assert exported[2]["content_2"] == "'=1+1"  # neutralised, as content is
        assert exported[2]["reasoning_content"] == "'=because"
        assert exported[1]["tool_calls"] == '[{"id": "c", "type": "function"}]'
