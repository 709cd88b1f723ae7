"""CSV exports of record batches (the source columns come back first, in order), answer fields
of schema batches, reused answers, ``--columns`` and ``--bom``: the SQL-built export on
PostgreSQL, the Python one and the SQLite one write the same bytes."""

from __future__ import annotations

import csv
import io
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update
from test_export_sql import FORMULAS, both, insert_rows, sql_export

from chatbatch.reporting.export import export_batch
from chatbatch.reporting.export.layout import BOM, CSV_COLUMNS, layout_for
from chatbatch.reporting.export.python import export_python
from chatbatch.store.db import make_engine
from chatbatch.store.migrate import upgrade
from chatbatch.store.models import requests_table

SCHEMA = orjson.dumps(
    {
        "type": "object",
        "properties": {
            "label": {"type": "string"},
            "confidence": {"type": "number"},
            "tags": {"type": "array"},
            "text": {"type": "string"},  # clashes with a record column
        },
        "required": ["label", "confidence"],
    }
).decode()
RECORD_COLUMNS = ["text", "stars", "status", "note, with comma"]
CSV_RECORDS: list[dict[str, Any]] = [
    {"text": "great, really", "stars": "5", "status": "new", "note, with comma": ""},
    {"text": 'say "hi"\nthen go', "stars": "-0.5", "status": "=cmd|' /C calc'!A0"},
    {"text": "@SUM(A1)", "stars": "+1", "status": "-2+3", "note, with comma": "\tx"},
    {"text": "é😀\r\nline", "stars": "", "status": "\x01", "note, with comma": "'quoted"},
    {},
]
ANSWERS: list[dict[str, Any]] = [
    {"content": '{"label": "positive", "confidence": 0.93, "tags": ["a", "b"]}', "sv": True},
    {"content": '```json\n{"label": "=1+1", "confidence": -0.5, "text": "x,y"}\n```', "sv": True},
    {"content": '{"label": "negative", "confidence": "high"}', "sv": False, "err": "=bad"},
    {"content": '{"label": "-neutral", "confidence": 1e2, "tags": {"k": null}}', "sv": None},
    {"content": "[1, 2]", "sv": None},
]


def record_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Request rows carrying ``records`` and the answers above, in turn."""
    rows = []
    for i, record in enumerate(records):
        answer = ANSWERS[i % len(ANSWERS)]
        rows.append(
            {
                "record": json.dumps(record, ensure_ascii=False),  # big integers too
                "content": answer["content"],
                "schema_valid": answer["sv"],
                "schema_error": answer.get("err"),
                "response": orjson.dumps({"choices": [], "n": i}).decode(),
            }
        )
    rows.append({"record": None, "status": "queued", "remote_id": None, "response": None})
    rows.append({"status": "failed", "error_code": "task_failed", "error_message": "-boom"})
    return rows


RECORD_BATCH = {"record_columns": orjson.dumps(RECORD_COLUMNS).decode(), "response_schema": SCHEMA}
COLUMN_CHOICES = [
    None,
    ["label", "text", "total_tokens", "answer.text", "confidence"],
    ["stars"],  # one column, some cells empty: csv.writer quotes a lone empty cell
    ["tags"],
    ["output.status", "custom_id", "schema_error"],  # output columns only: all SQL
    ["remote_id"],
    ["note, with comma", "status", "reused_from", "schema_valid"],
]


def parsed(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


@pytest.fixture(params=[True, False], ids=["stream", "cursor"])
def fetch_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Both ways rows are read (libpq's chunked rows, a server-side cursor), in blocks of 2."""
    import psycopg

    if request.param and psycopg.pq.version() < 170000:
        pytest.skip("this libpq has no chunked-rows mode")
    monkeypatch.setattr("chatbatch.reporting.export.postgres.CHUNKED_ROWS", request.param)
    monkeypatch.setattr("chatbatch.reporting.export.postgres.FETCH_ROWS", 2)
    yield


@pytest.mark.parametrize("columns", COLUMN_CHOICES, ids=repr)
@pytest.mark.parametrize("bom", [False, True], ids=["", "bom"])
def test_record_batches_are_byte_identical(
    db: Engine, fetch_paths: None, columns: list[str] | None, bom: bool
) -> None:
    rows = record_rows(CSV_RECORDS)
    ours, reference, count = both(db, rows, "csv", batch=RECORD_BATCH, columns=columns, bom=bom)
    assert count == len(rows)
    assert ours == reference
    assert ours.startswith(BOM) == bom


def test_record_columns_come_first_then_answer_fields_then_outputs(db: Engine) -> None:
    ours, _, _ = both(db, record_rows(CSV_RECORDS), "csv", batch=RECORD_BATCH)
    header = next(csv.reader(io.StringIO(ours.decode())))
    assert header == [
        *RECORD_COLUMNS,
        "label",
        "confidence",
        "tags",
        "answer.text",
        "schema_valid",
        "schema_error",
        "custom_id",
        "output.status",
        *CSV_COLUMNS[2:],
    ]
    table = parsed(ours)
    assert [row["custom_id"] for row in table] == [f"c{i}" for i in range(1, 8)]
    first, second, invalid, unjudged, not_an_object, queued, failed = table
    assert first["text"] == "great, really" and first["stars"] == "5"
    assert first["label"] == "positive" and first["confidence"] == "0.93"
    assert first["tags"] == '["a","b"]' and first["schema_valid"] == "true"
    assert second["text"] == 'say "hi"\nthen go'
    assert second["stars"] == "-0.5"  # a number, not a formula
    assert second["status"] == "'=cmd|' /C calc'!A0" and second["output.status"] == "succeeded"
    assert second["label"] == "'=1+1" and second["confidence"] == "-0.5"
    assert second["answer.text"] == "x,y"  # from a ```json fence
    assert invalid["label"] == invalid["confidence"] == "" and invalid["schema_valid"] == "false"
    assert invalid["schema_error"] == "'=bad"
    assert unjudged["label"] == "'-neutral" and unjudged["confidence"] == "100.0"
    assert unjudged["tags"] == '{"k":null}' and unjudged["schema_valid"] == ""
    assert not_an_object["label"] == "" and not_an_object["content"] == "[1, 2]"
    assert third_cells(table) == ["'@SUM(A1)", "+1", "'-2+3", "'\tx"]
    assert queued["text"] == "" and queued["output.status"] == "queued"
    assert failed["error_message"] == "'-boom"


def third_cells(table: list[dict[str, str]]) -> list[str]:
    return [table[2][name] for name in RECORD_COLUMNS]


JSON_RECORDS: list[dict[str, Any]] = [
    {"id": 1, "text": "a", "meta": {"lang": "en", "n": [1, 2.5]}, "ok": True},
    {"id": -2, "text": None, "meta": [], "ok": False, "extra": "not a column"},
    {"id": 12345678901234567890123, "text": "-x", "meta": "=1", "ok": None},
    {"id": 1.5e300, "text": "", "meta": {}, "ok": 'yes, "no"'},
]


@pytest.mark.parametrize("columns", [None, ["meta"], ["ok", "id", "content"]], ids=repr)
def test_json_record_values_are_compact_json_and_identical(
    db: Engine, fetch_paths: None, columns: list[str] | None
) -> None:
    batch = {"record_columns": orjson.dumps(["id", "text", "meta", "ok"]).decode()}
    rows = record_rows(JSON_RECORDS)
    ours, reference, _ = both(db, rows, "csv", batch=batch, columns=columns)
    assert ours == reference
    if columns is None:
        table = parsed(ours)
        assert [r["id"] for r in table[:4]] == ["1", "-2", "12345678901234567890123", "1.5e+300"]
        assert [r["meta"] for r in table[:4]] == ['{"lang":"en","n":[1,2.5]}', "[]", "'=1", "{}"]
        assert [r["ok"] for r in table[:4]] == ["true", "false", "", 'yes, "no"']
        assert table[1]["text"] == "" and table[2]["text"] == "'-x"
        assert "label" not in table[0] and "schema_valid" not in table[0]  # no schema


def test_a_plain_batch_with_a_schema_puts_answer_fields_after_custom_id(
    db: Engine, fetch_paths: None
) -> None:
    rows = record_rows([{}, {}, {}, {}, {}])
    for row in rows:
        row["record"] = None
    ours, reference, _ = both(db, rows, "csv", batch={"response_schema": SCHEMA})
    assert ours == reference
    header = ours.split(b"\n", 1)[0].decode().split(",")
    assert header[:7] == [
        "custom_id",
        "label",
        "confidence",
        "tags",
        "text",
        "schema_valid",
        "schema_error",
    ]
    assert header[7:] == list(CSV_COLUMNS[1:])


def insert_reused(db: Engine) -> tuple[str, int]:
    """A batch whose second row reused the first row's answer (with its task id, as
    ``chatbatch.input.reuse`` copies it), whose fourth reused an answer of the earlier batch
    ``=nightly, 1`` and whose third an answer since deleted; the first row's id."""
    earlier: list[dict[str, Any]] = [{"custom_id": 'r"7\r'}]
    rows: list[dict[str, Any]] = [
        {"content": "A", "response": '{"id": "chatcmpl-1", "choices": []}', "prompt_tokens": 9},
        {
            "status": "reused",
            "remote_id": "task-1",
            "content": "A",
            "response": '{"id": "chatcmpl-1", "choices": []}',
            "prompt_tokens": None,
            "submitted_at": None,
            "attempts": 0,
        },
        {"status": "reused", "remote_id": None, "response": '{"a": 1}', "reused_from": 2**62},
        {"status": "reused", "response": '{"b": 2}'},
    ]
    with db.begin() as conn:
        earlier_id = insert_rows(conn, earlier, name="=nightly, 1")
        batch_id = insert_rows(conn, rows, name="today")
        ids = {
            batch: conn.scalars(
                select(requests_table.c.id)
                .where(requests_table.c.batch_id == batch)
                .order_by(requests_table.c.line_no)
            ).all()
            for batch in (earlier_id, batch_id)
        }
        for at, source in ((1, ids[batch_id][0]), (3, ids[earlier_id][0])):
            conn.execute(
                update(requests_table)
                .where(requests_table.c.id == ids[batch_id][at])
                .values(reused_from=source)
            )
    return batch_id, ids[batch_id][0]


def test_reused_rows_export_as_successes_naming_their_source(db: Engine, fetch_paths: None) -> None:
    """``reused_from`` is ``<batch name>/<custom_id>`` of the answer's source, in CSV cell
    form (quoted, formula-guarded), empty when the source is gone; JSONL has no such field."""
    batch_id, _ = insert_reused(db)
    outputs = {}
    choices: list[tuple[str, dict[str, Any]]] = [
        ("jsonl", {}),
        ("csv", {}),
        ("csv", {"columns": ["reused_from"]}),
        ("csv", {"columns": ["reused_from"], "statuses": ["reused"]}),
    ]
    for fmt, options in choices:
        with db.connect() as conn:
            ours, count = sql_export(conn, batch_id, fmt, **options)
            out = io.BytesIO()
            export_python(conn, batch_id, out, fmt, **options)
        assert count == (3 if "statuses" in options else 4) and ours == out.getvalue()
        outputs[fmt, len(options)] = ours
    lines = [orjson.loads(line) for line in outputs["jsonl", 0].splitlines()]
    assert lines[1]["error"] is None and lines[1]["response"]["body"] == {
        "id": "chatcmpl-1",
        "choices": [],
    }
    # the answer's task id is the source request's (copied with the answer)
    assert lines[1]["response"]["request_id"] == lines[0]["response"]["request_id"] == "task-1"
    assert list(lines[1]) == list(lines[0]) and list(lines[1]["response"]) == list(
        lines[0]["response"]
    )
    assert lines[2]["response"]["request_id"] is None  # a row stored without one
    assert all("reused_from" not in line for line in lines)
    table = parsed(outputs["csv", 0])
    assert [r["status"] for r in table] == ["succeeded", "reused", "reused", "reused"]
    assert [r["reused_from"] for r in table] == ["", "today/c1", "", "'=nightly, 1/r\"7\r"]
    assert table[1]["remote_id"] == "task-1" and table[1]["prompt_tokens"] == ""
    expected = 'reused_from\n""\ntoday/c1\n""\n"\'=nightly, 1/r""7\r"\n'
    assert outputs["csv", 1] == expected.encode()
    assert outputs["csv", 2] == expected.replace('""\ntoday', "today").encode()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    names=st.lists(
        st.sampled_from(["a", "b,c", "status", "label", "=x", "", "text"]),
        min_size=1,
        max_size=4,
        unique=True,
    ),
)
def test_random_records_and_answers_are_byte_identical(
    db: Engine, data: st.DataObject, names: list[str]
) -> None:
    cells = (
        st.none()
        | st.text(max_size=8).filter(lambda t: "\x00" not in t)
        | st.sampled_from([*FORMULAS, "-0.5", "+3", "1e5"])
    )
    values = (
        cells
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.booleans()
    )
    record = st.dictionaries(st.sampled_from(names), values, max_size=len(names))
    answer = st.dictionaries(st.sampled_from(["label", "score", "text"]), values, max_size=3)
    row = st.fixed_dictionaries(
        {
            "record": record.map(json.dumps) | st.none(),
            "content": answer.map(json.dumps) | cells,
            "schema_valid": st.none() | st.booleans(),
            "schema_error": cells,
            "status": st.sampled_from(["succeeded", "reused", "failed", "queued"]),
        }
    )
    rows = data.draw(st.lists(row, min_size=1, max_size=5))
    schema: dict[str, Any] = {"properties": {"label": {}, "score": {}, "text": {}}}
    batch = {
        "record_columns": orjson.dumps(names).decode(),
        "response_schema": data.draw(st.sampled_from([None, orjson.dumps(schema).decode()])),
    }
    for fmt in ("csv", "jsonl"):
        ours, reference, _ = both(db, rows, fmt, batch=batch)
        assert ours == reference
    with db.begin() as conn:
        batch_id = insert_rows(conn, rows, **batch)
    header = [c.name for c in _layout(db, batch_id)]
    picked = data.draw(st.lists(st.sampled_from(header), min_size=1, max_size=4, unique=True))
    with db.connect() as conn:
        ours, _ = sql_export(conn, batch_id, "csv", columns=picked)
        out = io.BytesIO()
        export_python(conn, batch_id, out, "csv", columns=picked)
    assert ours == out.getvalue()


def _layout(db: Engine, batch_id: str) -> Any:
    from chatbatch.reporting.export.layout import batch_layout

    with db.connect() as conn:
        return batch_layout(conn, batch_id).columns


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'export.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("statuses", [None, ["reused", "queued"], ["submitted"]], ids=repr)
@pytest.mark.parametrize("columns", [None, ["label", "stars", "status", "reused_from"]], ids=repr)
def test_sqlite_writes_what_postgresql_writes(
    db: Engine, sqlite_db: Engine, columns: list[str] | None, statuses: list[str] | None
) -> None:
    """The same rows, with the same ids, in both databases, all of them or only some states;
    reused answers name their source, unfinished requests are exported as unfinished."""
    rows = record_rows(CSV_RECORDS)
    base = random.randrange(10**12, 2 * 10**12)  # far beyond what the sequence hands out
    for i, row in enumerate(rows):
        row["id"] = base + i
    rows[1].update(status="reused", reused_from=base, remote_id=None)
    rows[-2].update(error_code="rate_limited", error_message="429")  # the queued one
    wanted = [row for row in rows if statuses is None or row.get("status") in statuses]
    exports = []
    for engine in (db, sqlite_db):
        with engine.begin() as conn:
            batch_id = insert_rows(conn, rows, **RECORD_BATCH, name="labels")
        for fmt in ("csv", "jsonl"):
            with engine.connect() as conn:
                out = io.BytesIO()
                chosen = columns if fmt == "csv" else None
                count = export_batch(conn, batch_id, out, fmt, columns=chosen, statuses=statuses)
                assert count == len(wanted)
                exports.append(out.getvalue())
    assert exports[:2] == exports[2:]
    if statuses is None or "reused" in statuses:
        extras = b",,," if columns is None else b""  # tool_calls, reasoning, citations: empty
        assert b",labels/c1" + extras + b"\n" in exports[0]
    if statuses is None or "queued" in statuses:
        assert b"rate_limited" not in exports[0] + exports[1]
        unfinished = b'"error":{"code":"unfinished","message":"not finished yet (status queued)"}'
        assert unfinished in exports[1]


CR_COLUMNS = ["a\rb", "\r=HYPERLINK(1)", "x\r\ny", "plain"]
CR_VALUES = ["1\r2", 'ok\r=HYPERLINK("http://x.test","y")', "\r-1", "x\r"]


def shown(text: str) -> str:
    """``text`` as its CSV cell reads back: a leading CR gets the formula guard's quote."""
    return "'" + text if text.startswith("\r") else text


@pytest.mark.parametrize("columns", [None, ["\r=HYPERLINK(1)"], ["label\r", "a\rb"]], ids=repr)
def test_a_cr_in_column_names_records_and_answers_is_quoted_everywhere(
    db: Engine, sqlite_db: Engine, fetch_paths: None, columns: list[str] | None
) -> None:
    """Header, record and answer cells holding a CR are quoted on PostgreSQL (both paths) and
    SQLite alike, so the file reads back as one row per request with each CR in its cell."""
    records = [dict(zip(CR_COLUMNS, CR_VALUES[i:] + CR_VALUES[:i], strict=True)) for i in range(4)]
    rows = [
        {"record": json.dumps(r), "content": json.dumps({"label\r": v}), "schema_valid": True}
        for r, v in zip(records, CR_VALUES, strict=True)
    ]
    schema = orjson.dumps({"properties": {"label\r": {}}}).decode()
    batch = {"record_columns": orjson.dumps(CR_COLUMNS).decode(), "response_schema": schema}
    ours, reference, count = both(db, rows, "csv", batch=batch, columns=columns)
    assert ours == reference and count == len(rows)
    with sqlite_db.begin() as conn:
        batch_id = insert_rows(conn, rows, **batch)
    with sqlite_db.connect() as conn:
        out = io.BytesIO()
        export_batch(conn, batch_id, out, "csv", columns=columns)
    assert out.getvalue() == ours
    table = parsed(ours)
    header = columns or layout_for(CR_COLUMNS, ["label\r"]).header
    assert list(table[0]) == [shown(name) for name in header]
    assert len(table) == len(rows)
    for row, record, answer in zip(table, records, CR_VALUES, strict=True):
        for name in header:
            if name in record:
                assert row[shown(name)] == shown(record[name])
        assert row.get("label\r", shown(answer)) == shown(answer)


def test_progress_hears_every_row(db: Engine, fetch_paths: None) -> None:
    rows = record_rows(CSV_RECORDS)
    with db.begin() as conn:
        batch_id = insert_rows(conn, rows, **RECORD_BATCH)
    for options in ({}, {"columns": ["custom_id"]}):
        for fmt in ("csv", "jsonl"):
            if fmt == "jsonl" and options:
                continue
            for export in (sql_export_with, python_export_with):
                heard: list[int] = []
                with db.connect() as conn:
                    count = export(conn, batch_id, fmt, on_rows=heard.append, **options)
                assert count == sum(heard) == len(rows)


def sql_export_with(conn: Any, batch_id: str, fmt: str, **options: Any) -> int:
    return sql_export(conn, batch_id, fmt, **options)[1]


def python_export_with(conn: Any, batch_id: str, fmt: str, **options: Any) -> int:
    return export_python(conn, batch_id, io.BytesIO(), fmt, **options)


def run_export(*args: str) -> Any:
    from cli.export_cmd import export_command

    return CliRunner().invoke(export_command, list(args), catch_exceptions=False)


def test_export_command_picks_columns_and_writes_a_bom(db: Engine, tmp_path: Path) -> None:
    with db.begin() as conn:
        batch_id = insert_rows(conn, record_rows(CSV_RECORDS), **RECORD_BATCH)
    target = tmp_path / "out.csv"
    result = run_export(
        batch_id, "-o", str(target), "--bom", "--columns", ' label, "note, with comma",status'
    )
    assert result.exit_code == 0, result.output
    data = target.read_bytes()
    assert data.startswith(BOM + b'label,"note, with comma",status\npositive,,new\n')
    assert len(parsed(data)) == 7


def test_export_command_refuses_unknown_columns_and_csv_options_on_jsonl(
    db: Engine, tmp_path: Path
) -> None:
    with db.begin() as conn:
        batch_id = insert_rows(conn, record_rows(CSV_RECORDS[:1]), **RECORD_BATCH)
    target = tmp_path / "out.csv"
    result = run_export(batch_id, "-o", str(target), "--columns", "text,lable")
    assert result.exit_code == 2
    assert "unknown column(s): lable; this batch has: text, stars, status" in result.output
    assert "answer.text, schema_valid" in result.output
    assert not target.exists() and not list(tmp_path.iterdir())  # no half file left
    for option in (["--bom"], ["--columns", "custom_id"]):
        result = run_export(batch_id, "-o", str(tmp_path / "out.jsonl"), *option)
        assert result.exit_code == 2 and "for CSV exports" in result.output


def test_export_to_shows_a_progress_bar_of_rows(
    db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.exporting import export_to

    with db.begin() as conn:
        batch_id = insert_rows(conn, record_rows(CSV_RECORDS), **RECORD_BATCH)
    assert export_to(batch_id, tmp_path / "o.csv", None, progress=True) == 7
    assert "7/7" in capsys.readouterr().err
    assert export_to(batch_id, tmp_path / "o.jsonl", None) == 7  # stderr is no terminal here
    assert capsys.readouterr().err == ""


def test_export_to_counts_only_the_chosen_states_in_its_progress_bar(
    db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.exporting import export_to

    with db.begin() as conn:
        batch_id = insert_rows(conn, record_rows(CSV_RECORDS), **RECORD_BATCH)
    target = tmp_path / "o.jsonl"
    assert export_to(batch_id, target, None, statuses=["queued"], progress=True) == 1
    assert "1/1" in capsys.readouterr().err
    assert orjson.loads(target.read_bytes())["custom_id"] == "c6"


def unwritable(*args: Any, **kwargs: Any) -> Any:
    raise PermissionError(13, "Permission denied")


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("dir", "it is a directory"),
        ("dir/missing/child.jsonl", "directory {tmp}/dir/missing does not exist"),
        ("file.jsonl/child.jsonl", "{tmp}/file.jsonl is not a directory"),
        ("fifo", "it is not a regular file (`-o -` writes to standard output)"),
        ("locked/out.jsonl", "Permission denied"),
    ],
)
def test_export_command_refuses_an_output_it_cannot_write_before_anything_else(
    db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, says: str
) -> None:
    """Exit 2 naming the path, nothing written, and before the batch is even looked up (the
    batch named here does not exist). ``locked`` is a directory we may not write in: as root
    every directory is writable, so making the temporary file there is refused instead."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "locked").mkdir()
    (tmp_path / "file.jsonl").write_text("kept\n")
    os.mkfifo(tmp_path / "fifo")
    if where.startswith("locked"):
        monkeypatch.setattr("cli.files.tempfile.mkstemp", unwritable)
    before = sorted(tmp_path.rglob("*"))
    result = run_export("no-such-batch", "-o", str(tmp_path / where))
    assert result.exit_code == 2
    assert result.stderr == f"error: cannot write {tmp_path / where}: {says.format(tmp=tmp_path)}\n"
    assert result.stdout == ""
    assert (
        sorted(tmp_path.rglob("*")) == before and (tmp_path / "file.jsonl").read_text() == "kept\n"
    )


@pytest.mark.parametrize("fmt", [None, "csv"])
def test_export_command_streams_to_stdout_with_nothing_else_there(
    db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str | None
) -> None:
    """``-o -``: the export alone on stdout (JSONL unless --format says otherwise), the same
    bytes as a file gets; messages on stderr; no file named ``-``."""
    with db.begin() as conn:
        batch_id = insert_rows(conn, record_rows(CSV_RECORDS), **RECORD_BATCH)
    monkeypatch.chdir(tmp_path)
    options = ["--format", fmt] if fmt else []
    result = run_export(batch_id, "-o", "-", *options)
    assert result.exit_code == 0, result.output
    expected = io.BytesIO()
    with db.connect() as conn:
        export_batch(conn, batch_id, expected, fmt or "jsonl")
    assert result.stdout_bytes == expected.getvalue()
    assert "wrote 7 result(s) to standard output" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_export_command_exports_only_the_states_asked_for(db: Engine, tmp_path: Path) -> None:
    with db.begin() as conn:
        batch_id = insert_rows(conn, record_rows(CSV_RECORDS), **RECORD_BATCH)
    result = run_export(batch_id, "-o", "-", "--status", "failed, queued")
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.stdout_bytes.splitlines()]
    assert [line["custom_id"] for line in lines] == ["c6", "c7"]
    assert [line["error"]["code"] for line in lines] == ["unfinished", "task_failed"]
    bad = run_export(batch_id, "-o", str(tmp_path / "o.csv"), "--status", "failed,done")
    assert bad.exit_code == 2 and not (tmp_path / "o.csv").exists()
    assert "--status: done; choose from queued, submitting, submitted, succeeded" in bad.stderr


def test_export_command_warns_that_a_running_batch_is_not_finished(db: Engine) -> None:
    rows = record_rows(CSV_RECORDS)  # one queued request among seven
    rows[0].update(status="submitted", response=None)
    with db.begin() as conn:
        running = insert_rows(conn, rows, name="labels")
        paused = insert_rows(conn, rows, name="held", status="paused")
        finished = insert_rows(conn, rows[1:-2], name="done", status="completed")
    result = run_export("labels", "-o", "-")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(
        "warning: batch labels is still running: 2 of 7 requests are not finished; they are "
        "exported as unfinished\n"
    )
    codes = [orjson.loads(line)["error"] for line in result.stdout_bytes.splitlines()]
    assert [c["code"] for c in codes if c] == ["unfinished", "unfinished", "task_failed"]
    left_out = run_export(running, "-o", "-", "--status", "failed,succeeded")
    assert "2 of 7 requests are not finished; --status leaves them out" in left_out.stderr
    assert "warning: batch held is paused: 2 of 7" in run_export(paused, "-o", "-").stderr
    assert "warning" not in run_export(finished, "-o", "-").stderr
