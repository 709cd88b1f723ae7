"""CSV files and JSONL record files loaded through a prompt template, on PostgreSQL (COPY) and
SQLite (chunked INSERT): what is stored, every refusal named by line, nothing half-loaded, and
the `load` / `run` options around it."""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, func, select

from chatbatch.errors import InputError
from chatbatch.input.fingerprints import fingerprint
from chatbatch.input.loading import BatchOptions, LoadedBatch, load_jsonl, load_source
from chatbatch.input.records import CsvRecords, JsonlRecords, RecordRequests
from chatbatch.input.templating import prompt_template
from chatbatch.rules.pricing import load_prices
from chatbatch.rules.structured import load_schema
from chatbatch.store.db import make_engine
from chatbatch.store.migrate import upgrade
from chatbatch.store.models import batches_table, requests_table
from cli.main import cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@pytest.fixture(params=["postgresql", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The test PostgreSQL database (emptied), or a fresh migrated SQLite file."""
    if request.param == "postgresql":
        yield request.getfixturevalue("db")
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'records.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def load_records(
    engine: Engine,
    path: Path,
    template: str = "{{ text }}",
    *,
    system: str | None = None,
    id_column: str | None = None,
    options: BatchOptions | None = None,
) -> LoadedBatch:
    records: CsvRecords | JsonlRecords
    if path.suffix == ".csv":
        records = CsvRecords(path, max_line_bytes=1 << 20, id_column=id_column)
    else:
        records = JsonlRecords(path, max_line_bytes=1 << 20)
    source = RecordRequests(
        records, prompt_template(template, system=system), model="m", id_column=id_column
    )
    with engine.begin() as conn:
        return load_source(conn, source, name=None, options=options)


def stored(engine: Engine, batch_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(requests_table)
            .where(requests_table.c.batch_id == batch_id)
            .order_by(requests_table.c.line_no)
        ).all()
    return [dict(row._mapping) for row in rows]


def batch_row(engine: Engine, batch_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(batches_table).where(batches_table.c.id == batch_id)).one()


def counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        batches = conn.execute(select(func.count()).select_from(batches_table)).scalar_one()
        requests = conn.execute(select(func.count()).select_from(requests_table)).scalar_one()
    return batches, requests


def refusal(engine: Engine, path: Path, **kw: Any) -> InputError:
    before = counts(engine)
    with pytest.raises(InputError) as info:
        load_records(engine, path, **kw)
    assert counts(engine) == before  # nothing of the refused file stays
    return info.value


# --- what a good file stores -----------------------------------------------------------------


def test_csv_rows_become_requests_with_their_source_records(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_bytes(
        b"\xef\xbb\xbfid,product,text\r\n"
        b'a1,kettle,"Boils fast, ""really"" fast"\r\n'
        b"\r\n"
        b'a2,lamp,"two\r\nlines"\r\n'
        b"a3,mug,tab\there \\ and \xc3\xa9\xf0\x9f\x98\x80\r\n"
    )
    batch = load_records(
        store, path, "{{ product }}: {{ text }}", system="Label the {{ product }} review."
    )
    assert batch.total == 3
    rows = stored(store, batch.id)
    assert [(r["line_no"], r["custom_id"], r["model"]) for r in rows] == [
        (2, "1", "m"),
        (4, "2", "m"),
        (6, "3", "m"),
    ]
    body = orjson.loads(rows[1]["body"])
    assert body == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Label the lamp review."},
            {"role": "user", "content": "lamp: two\r\nlines"},
        ],
    }
    assert (
        rows[0]["record"] == '{"id":"a1","product":"kettle","text":"Boils fast, \\"really\\" fast"}'
    )
    assert orjson.loads(rows[2]["record"])["text"] == "tab\there \\ and é😀"
    assert list(orjson.loads(rows[2]["record"])) == ["id", "product", "text"]  # column order
    for row in rows:
        assert row["fingerprint"] == fingerprint(orjson.loads(row["body"]))
        assert row["status"] == "queued"
    stored_batch = batch_row(store, batch.id)
    assert orjson.loads(stored_batch.record_columns) == ["id", "product", "text"]
    assert stored_batch.total == 3 and stored_batch.response_schema is None


def test_id_column_supplies_the_custom_ids(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("text,key\nx,k-9\ny,k-1\n")
    batch = load_records(store, path, id_column="key")
    assert [r["custom_id"] for r in stored(store, batch.id)] == ["k-9", "k-1"]


def test_jsonl_records_keep_every_field_in_first_seen_order(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    lines = [
        {"text": "a", "id": 10},
        {"id": 11, "text": "b", "meta": {"lang": "de"}},
        {"id": "12", "extra": None, "text": "c"},
    ]
    path.write_bytes(b"\n\n".join(orjson.dumps(line) for line in lines) + b"\n")
    template = "{{ text }}{% if meta is defined %} [{{ meta.lang }}]{% endif %}"
    batch = load_records(store, path, template, id_column="id")
    rows = stored(store, batch.id)
    assert [(r["line_no"], r["custom_id"]) for r in rows] == [(1, "10"), (3, "11"), (5, "12")]
    assert orjson.loads(rows[1]["body"])["messages"][0]["content"] == "b [de]"
    assert [orjson.loads(r["record"]) for r in rows] == lines
    columns = batch_row(store, batch.id).record_columns
    assert orjson.loads(columns) == ["text", "id", "meta", "extra"]


def test_jsonl_records_default_ids_are_record_numbers(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n')
    batch = load_records(store, path)
    assert [(r["line_no"], r["custom_id"]) for r in stored(store, batch.id)] == [(1, "1"), (3, "2")]


def test_a_cell_larger_than_csvs_default_limit_loads(store: Engine, tmp_path: Path) -> None:
    limit = csv.field_size_limit()
    path = tmp_path / "big.csv"
    path.write_text("id,text\n1," + "w" * 300_000 + "\n")
    batch = load_records(store, path)
    assert (
        len(orjson.loads(stored(store, batch.id)[0]["body"])["messages"][0]["content"]) == 300_000
    )
    assert csv.field_size_limit() == limit  # put back as it was


def test_progress_hears_every_byte_read(db: Engine, tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    with path.open("w") as fh:
        fh.write("id,text\n")
        for i in range(40_000):
            fh.write(f"{i},review number {i} with some words in it\n")
    heard: list[int] = []
    source = RecordRequests(
        CsvRecords(path, max_line_bytes=1 << 20),
        prompt_template("{{ text }}", system=None),
        model="m",
    )
    with db.begin() as conn:
        load_source(conn, source, name=None, on_bytes=heard.append)
    assert len(heard) >= 2 and heard == sorted(heard)
    assert heard[-1] == path.stat().st_size


# --- refusals --------------------------------------------------------------------------------


def test_a_missing_column_is_refused_once_at_the_header(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("id,product,text\n1,kettle,a\n2,lamp,b\n")
    error = refusal(store, path, template="Label: {{ txt }}")
    problem = (
        "template uses column 'txt' (did you mean 'text'?), which the file does not have "
        "(columns: id, product, text)"
    )
    assert error.problems == [(1, problem)]
    assert error.total_problems == 1
    assert f"{path}:1: {problem}" in str(error)


def test_every_unknown_column_of_both_templates_is_named_at_the_header(
    store: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "data.csv"
    path.write_text("\n\nid,product,text\n1,kettle,a\n")  # the header is on line 3
    error = refusal(
        store,
        path,
        template="{{ prodct }}: {{ txt }} {{ zzz }} {{ row.id }}",
        system="You are {{ persona }}",
    )
    assert error.problems == [
        (
            3,
            "system template uses column 'persona', which the file does not have "
            "(columns: id, product, text)",
        ),
        (
            3,
            "template uses columns 'prodct' (did you mean 'product'?), 'txt' (did you mean "
            "'text'?) and 'zzz', which the file does not have (columns: id, product, text)",
        ),
    ]


def test_the_header_is_checked_before_any_row(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("id,text\n1,a,extra\n1,b\n")
    error = refusal(store, path, template="{{ txt }}", id_column="id")
    assert [line for line, _ in error.problems] == [1]


def test_columns_a_template_tests_for_may_be_missing(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("id,text\n1,a\n")
    template = "{{ text }}{% if note is defined %} ({{ note }}){% endif %}{{ tag | default('') }}"
    batch = load_records(store, path, template)
    assert orjson.loads(stored(store, batch.id)[0]["body"])["messages"][0]["content"] == "a"


def test_record_files_have_no_header_so_each_record_is_checked(
    store: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"text": "a"}\n{"txt": "b"}\n{"text": "c"}\n')
    error = refusal(store, path, template="{{ txt }}")
    assert error.problems == [
        (1, "template uses field 'txt', which this record does not have (fields: text)"),
        (3, "template uses field 'txt', which this record does not have (fields: text)"),
    ]


def test_a_template_that_changes_its_record_is_refused_line_by_line(
    store: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "data.csv"
    path.write_text("id,text\n1,a\n2,b\n")
    error = refusal(store, path, template="{{ row.update({'text': 'x'}) }}{{ text }}")
    problem = (
        "template failed: SecurityError: templates cannot change values: 'update' would "
        "modify the dict"
    )
    assert error.problems == [(2, problem), (3, problem)]


def test_the_stored_record_is_the_record_as_read(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "tags": ["x"]}\n')
    batch = load_records(store, path, "{{ text }} {{ tags | list + ['y'] }} {{ dict(row, z=1) }}")
    row = stored(store, batch.id)[0]
    assert orjson.loads(row["record"]) == {"text": "a", "tags": ["x"]}
    content = orjson.loads(row["body"])["messages"][0]["content"]
    assert content == "a ['x', 'y'] {'text': 'a', 'tags': ['x'], 'z': 1}"


def test_a_template_that_runs_out_of_time_stops_the_read(
    store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row would most likely take as long: the file is refused at the first."""
    monkeypatch.setattr("chatbatch.input.templating.RENDER_SECONDS", 0.2)
    path = tmp_path / "data.csv"
    path.write_text("id,text\n" + "".join(f"{i},t\n" for i in range(50)))
    slow = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    error = refusal(store, path, template=slow + "{{ text }}")
    assert time.monotonic() - started < 5
    assert error.problems == [
        (
            2,
            "template stopped: it took longer than the limit of 0.2 s per record; the rest of "
            "the file was not read",
        )
    ]


def test_a_rendered_message_may_be_no_longer_than_a_line(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("id,text\n1,ab\n2,abc\n")
    source = RecordRequests(
        CsvRecords(path, max_line_bytes=2048),
        prompt_template("{{ text * 1000 }}", system=None),
        model="m",
    )
    with pytest.raises(InputError) as info, store.begin() as conn:
        load_source(conn, source, name=None)
    assert info.value.problems == [
        (
            3,
            "template stopped: it would build a text longer than the limit of 2048 bytes "
            "(CHATBATCH_MAX_LINE_BYTES)",
        )
    ]
    assert counts(store) == (0, 0)


def test_duplicate_ids_are_listed_by_line_and_nothing_loads(
    store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the unique index finds it after rows were already sent; the file is read
    again for the message. SQLite finds it while reading."""
    monkeypatch.setattr("chatbatch.input.bulk_insert.COPY_BUFFER_BYTES", 300)
    path = tmp_path / "dups.csv"
    rows = [f"r{i},text {i}" for i in range(60)] + ["r7,again", "r8,and again"]
    path.write_text("id,text\n" + "\n".join(rows) + "\n")
    error = refusal(store, path, id_column="id")
    message = str(error)
    assert f"{path}:62: duplicate id 'r7' in column 'id' (first on line 9)" in message
    assert f"{path}:63: duplicate id 'r8' in column 'id' (first on line 10)" in message
    assert error.total_problems == 2


def test_bad_rows_are_each_named_by_their_physical_line(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b"id,text\n"
        b"1,fine\n"
        b'2,"spans\ntwo lines",extra\n'
        b"3\n"
        b",empty id\n"
        b"5,caf\xe9\n"
        b'6,"never closed\n'
        b"7,swallowed\n"
    )
    error = refusal(store, path, id_column="id")
    assert error.problems == [
        (3, "expected 2 cell(s) like the header (id, text), found 3"),
        (5, "expected 2 cell(s) like the header (id, text), found 1"),
        (6, "the id in column 'id' is empty"),
        (7, "invalid UTF-8 at byte 5"),
        (8, "not valid CSV: a quoted cell that starts in this row is never closed"),
    ]


def test_header_problems_refuse_the_file_at_once(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("")
    assert "a header row of column names is required" in str(refusal(store, path))
    path.write_text("id,text,id\n1,a,b\n")
    assert refusal(store, path).problems == [
        (1, "column name 'id' appears twice in the header (columns 1 and 3)")
    ]
    path.write_text("id,text\n1,a\n")
    assert refusal(store, path, id_column="key").problems == [
        (1, "--id-column 'key' is not a column of the file (columns: id, text)")
    ]


def test_bad_record_lines(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b'{"id": "a", "text": "x"}\n[1, 2]\n{"text": "y"}\n{nope\n{"id": true, "text": "z"}\n'
    )
    error = refusal(store, path, id_column="id")
    problems = [(line, reason.split(":")[0]) for line, reason in error.problems]
    assert problems == [
        (2, "expected a JSON object of fields, got list"),
        (3, "no field 'id' (--id-column) in this record"),
        (4, "invalid JSON"),
        (5, "the id in field 'id' must be text or a whole number, got bool"),
    ]


def test_a_file_with_a_header_only_has_no_requests(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("id,text\n\n")
    assert "the file has no requests" in str(refusal(store, path))


# --- batch options: schema, prices, cost cap; fingerprints on every load ----------------------


def test_schema_prices_and_cost_cap_are_stored_with_the_batch(db: Engine, tmp_path: Path) -> None:
    schema = load_schema(EXAMPLES / "review_schema.json")
    prices = load_prices(EXAMPLES / "prices.toml")
    options = BatchOptions(
        schema=schema,
        schema_name="review_schema",
        retry_invalid=2,
        prices=prices,
        max_cost=Decimal("1.50"),
    )
    path = tmp_path / "requests.jsonl"
    own_format = {"type": "json_object"}
    lines = [
        {"custom_id": "a", "model": "m", "messages": [{"role": "user", "content": "hi"}]},
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": own_format,
        },
    ]
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    with db.begin() as conn:
        batch = load_jsonl(
            conn, path, name=None, default_model=None, max_line_bytes=1 << 20, options=options
        )
    rows = stored(db, batch.id)
    first, second = (orjson.loads(r["body"]) for r in rows)
    assert first["response_format"]["json_schema"] == {
        "name": "review_schema",
        "schema": schema,
        "strict": True,
    }
    assert second["response_format"] == own_format  # a request's own format is left alone
    assert [r["record"] for r in rows] == [None, None]
    assert [r["fingerprint"] for r in rows] == [fingerprint(first), fingerprint(second)]
    row = batch_row(db, batch.id)
    assert orjson.loads(row.response_schema) == schema
    assert row.retry_invalid == 2 and row.max_cost == "1.50" and row.record_columns is None
    assert type(prices).model_validate_json(row.prices) == prices


def test_json_mode_schema_on_templated_requests(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("text\nhello\n")
    options = BatchOptions(schema={"type": "object"}, schema_mode="json_mode")
    batch = load_records(store, path, options=options)
    body = orjson.loads(stored(store, batch.id)[0]["body"])
    assert body["json_mode"] is True and "response_format" not in body


def test_the_same_request_has_the_same_fingerprint_whichever_file_it_came_from(
    store: Engine, tmp_path: Path
) -> None:
    csv_path = tmp_path / "one.csv"
    csv_path.write_text("text\nhello there\n")
    from_csv = stored(store, load_records(store, csv_path).id)[0]
    jsonl_path = tmp_path / "one.jsonl"
    line = {"messages": [{"content": "hello there", "role": "user"}], "model": "m"}
    jsonl_path.write_bytes(orjson.dumps(line))
    with store.begin() as conn:
        batch = load_jsonl(conn, jsonl_path, name=None, default_model=None, max_line_bytes=4096)
    assert stored(store, batch.id)[0]["fingerprint"] == from_csv["fingerprint"]


# --- the command line ------------------------------------------------------------------------


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


REVIEW_ARGS = (
    str(EXAMPLES / "reviews.csv"),
    "--template",
    f"@{EXAMPLES / 'review_prompt.txt'}",
    "--model",
    "gpt-4o-mini",
    "--schema",
    str(EXAMPLES / "review_schema.json"),
    "--id-column",
    "id",
)


def test_load_the_example_reviews(db: Engine) -> None:
    result = invoke(
        "load", *REVIEW_ARGS, "--prices", str(EXAMPLES / "prices.toml"), "--max-cost", "2", "--json"
    )
    assert result.exit_code == 0, result.output
    loaded = orjson.loads(result.stdout)
    assert loaded["total"] == 1000
    row = batch_row(db, loaded["id"])
    assert orjson.loads(row.record_columns) == ["id", "product", "text"]
    assert row.max_cost == "2" and row.prices and row.retry_invalid == 0
    first = stored(db, loaded["id"])[0]
    body = orjson.loads(first["body"])
    assert first["custom_id"] == "r0001"
    assert "Review:\n" in body["messages"][0]["content"]
    assert body["response_format"]["json_schema"]["name"] == "review_schema"
    assert "━" not in result.stderr  # no progress bar when stderr is not a terminal


def test_dry_run_shows_requests_and_estimates_and_loads_nothing(db: Engine) -> None:
    result = invoke("load", *REVIEW_ARGS, "--prices", str(EXAMPLES / "prices.toml"), "--dry-run")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("# request ") == 3
    assert "# request 1 of 1,000 (line 2, custom_id 'r0001')" in out
    assert "1,000 request(s) in" in out and "nothing was loaded" in out
    assert "estimated prompt tokens: " in out and "an estimate" in out
    assert "estimated input cost: 0.0" in out and "USD" in out
    assert out.count('"schema": {') == 1  # the schema once, not once per request shown
    assert out.count('"response_format": "(as in request 1)"') == 2
    assert counts(db) == (0, 0)

    as_json = orjson.loads(invoke("load", *REVIEW_ARGS, "--dry-run", "--json").stdout)
    assert as_json["total"] == 1000 and as_json["dry_run"] is True
    assert as_json["estimated_input_cost"] is None and len(as_json["requests"]) == 3
    assert as_json["estimated_prompt_tokens"] == sum(
        as_json["estimated_prompt_tokens_by_model"].values()
    )
    assert counts(db) == (0, 0)


def test_dry_run_reports_problems_like_a_load(db: Engine, tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,text\n1,a\n1,b\n")
    result = invoke(
        "load",
        str(path),
        "--template",
        "{{ text }}",
        "--model",
        "m",
        "--id-column",
        "id",
        "--dry-run",
    )
    assert result.exit_code == 2
    assert f"{path}:3: duplicate id '1' in column 'id' (first on line 2)" in result.stderr


def test_run_takes_the_same_load_options(db: Engine, tmp_path: Path) -> None:
    out = tmp_path / "never-written.csv"
    result = invoke("run", *REVIEW_ARGS, "-o", str(out), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "1,000 request(s) in" in result.stdout
    assert counts(db) == (0, 0) and not out.exists()


def test_a_bad_template_names_the_template_and_loads_nothing(db: Engine, tmp_path: Path) -> None:
    template = tmp_path / "prompt.txt"
    template.write_text("Label this:\n{{ text }\n")
    result = invoke(
        "load", str(EXAMPLES / "reviews.csv"), "--template", f"@{template}", "--model", "m"
    )
    assert result.exit_code == 2
    assert f"{template}:2: template syntax error: unexpected '}}'" in result.stderr
    assert counts(db) == (0, 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "m"], "a CSV file needs --template"),
        (["--template", "{{ text }}"], "--template needs --model"),
        (
            ["--template", "{{ text }}", "--model", "m", "--max-cost", "1"],
            "--max-cost needs a price",
        ),
        (["--template", "{{ text }}", "--model", "m", "--max-cost", "0"], "must be a positive"),
        (["--template", "{{ text }}", "--model", "m", "--retry-invalid", "2"], "needs --schema"),
        (
            [
                "--template",
                "{{ text }}",
                "--model",
                "m",
                "--max-cost",
                "1",
                "--prices",
                str(EXAMPLES / "prices.toml"),
            ],
            "no price for 'm'",
        ),
        (["--template", "{{ text }}", "--model", "m", "--param", "temperature"], "not KEY=VALUE"),
        (["--template", "{{ text }}", "--model", "m", "--param", "model=x"], "set by chatbatch"),
        (
            ["--template", "{{ text }}", "--model", "m", "--param", "max_tokens=lots"],
            "max_tokens: input should be a valid integer",
        ),
    ],
)
def test_usage_errors(db: Engine, args: list[str], message: str) -> None:
    result = invoke("load", str(EXAMPLES / "reviews.csv"), *args)
    assert result.exit_code == 2
    assert message in result.output
    assert counts(db) == (0, 0)


def test_params_go_into_every_templated_request(db: Engine, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("id,text\n1,good\n2,bad\n")
    args = ["--template", "{{ text }}", "--model", "m", "--param", "temperature=0"]
    result = invoke("load", str(path), *args, "--param", "stop=END", "--param", "seed=7")
    assert result.exit_code == 0, result.output
    with db.connect() as conn:
        bodies = [orjson.loads(b) for b in conn.execute(select(requests_table.c.body)).scalars()]
    assert [list(b) for b in bodies] == [["model", "messages", "temperature", "stop", "seed"]] * 2
    assert {(b["temperature"], b["stop"], b["seed"]) for b in bodies} == {(0, "END", 7)}


def test_request_files_refuse_template_only_options(db: Engine, tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"model": "m", "messages": [{"role": "user", "content": "hi"}]}\n')
    result = invoke("load", str(path), "--id-column", "id")
    assert result.exit_code == 2 and "--id-column needs --template" in result.output


def test_the_progress_bar_is_drawn_for_a_terminal_and_large_files_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli.load_cmd import PROGRESS_MIN_BYTES, byte_progress

    large = tmp_path / "large.jsonl"
    large.write_bytes(b"x" * PROGRESS_MIN_BYTES)
    small = tmp_path / "small.jsonl"
    small.write_bytes(b"x")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    with byte_progress(large, "loading") as on_bytes:
        assert on_bytes is None
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with byte_progress(small, "loading") as on_bytes:
        assert on_bytes is None
    with byte_progress(large, "loading") as on_bytes:
        assert on_bytes is not None
        on_bytes(PROGRESS_MIN_BYTES)
