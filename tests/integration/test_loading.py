"""Loading into PostgreSQL: real files as they come, and bad files refused whole."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, func, select

from chatbatch.errors import ChatbatchError, InputError
from chatbatch.input.jsonl_input import prepare_line
from chatbatch.input.loading import load_jsonl
from chatbatch.store.models import batches_table, requests_table
from cli.main import cli

MESSAGES = [{"role": "user", "content": "hi"}]


def load(engine: Engine, path: Path, **kw: object):
    options: dict[str, object] = {"name": None, "default_model": None, "max_line_bytes": 1 << 20}
    options.update(kw)
    with engine.begin() as conn:
        return load_jsonl(conn, path, **options)


def counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        batches = conn.execute(select(func.count()).select_from(batches_table)).scalar_one()
        requests = conn.execute(select(func.count()).select_from(requests_table)).scalar_one()
    return batches, requests


def test_real_openai_batch_input_loads_as_is(db: Engine, fixtures_dir: Path) -> None:
    path = fixtures_dir / "mitre-batchinput.jsonl"
    batch = load(db, path, name="mitre")
    assert batch.total == 823
    first = orjson.loads(path.read_bytes().splitlines()[0])
    with db.connect() as conn:
        row = conn.execute(select(requests_table).where(requests_table.c.line_no == 1)).one()
    assert row.custom_id == first["custom_id"]
    assert orjson.loads(row.body) == first["body"]
    assert row.status == "queued" and row.model == "gpt-4.1-nano"


def test_bad_file_is_refused_whole_with_every_problem(db: Engine, tmp_path: Path) -> None:
    good = orjson.dumps({"custom_id": "a", "model": "m", "messages": MESSAGES}).decode()
    lines = [
        good,
        "{not json",
        orjson.dumps({"custom_id": "a", "model": "m", "messages": MESSAGES}).decode(),
        orjson.dumps({"model": "m", "messages": []}).decode(),
        orjson.dumps({"model": "m", "messages": MESSAGES, "stream": True}).decode(),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        load(db, path)
    message = str(info.value)
    assert f"{path}:2: invalid JSON" in message
    assert f"{path}:3: duplicate custom_id 'a' (first on line 1)" in message
    assert f"{path}:4: messages: must not be empty" in message
    assert f"{path}:5:" in message and "stream" in message
    assert info.value.total_problems == 4
    assert counts(db) == (0, 0)


def test_empty_file_is_refused(db: Engine, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(InputError, match="no requests"):
        load(db, path)
    assert counts(db) == (0, 0)


def test_missing_file_and_taken_name(db: Engine, tmp_path: Path) -> None:
    with pytest.raises(ChatbatchError, match="no such file"):
        load(db, tmp_path / "nope.jsonl")
    path = tmp_path / "ok.jsonl"
    path.write_text(orjson.dumps({"model": "m", "messages": MESSAGES}).decode())
    load(db, path, name="taken")
    with pytest.raises(ChatbatchError, match="already exists"):
        load(db, path, name="taken")
    assert counts(db) == (1, 1)


def test_default_model_and_default_ids(db: Engine, tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    path.write_text("\n".join(orjson.dumps({"messages": MESSAGES}).decode() for _ in range(3)))
    batch = load(db, path, default_model="gpt-4o-mini")
    with db.connect() as conn:
        rows = conn.execute(
            select(requests_table.c.custom_id, requests_table.c.model)
            .where(requests_table.c.batch_id == batch.id)
            .order_by(requests_table.c.line_no)
        ).all()
    assert [tuple(r) for r in rows] == [(str(i), "gpt-4o-mini") for i in (1, 2, 3)]


def test_duplicates_alone_are_found_by_the_database_and_reported_by_line(
    db: Engine, tmp_path: Path
) -> None:
    """On PostgreSQL no id set is kept while loading; the unique index catches the duplicate and
    the file is read again to name every problem."""
    lines = [orjson.dumps({"custom_id": c, "model": "m", "messages": MESSAGES}) for c in "abcab"]
    path = tmp_path / "dups.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(InputError) as info:
        load(db, path)
    message = str(info.value)
    assert f"{path}:4: duplicate custom_id 'a' (first on line 1)" in message
    assert f"{path}:5: duplicate custom_id 'b' (first on line 2)" in message
    assert info.value.total_problems == 2
    assert counts(db) == (0, 0)


TRICKY_IDS = [
    "back\\slash",
    "\\N",
    "\\.",
    "\\t",
    "é😀",
    'a,b"c',
    "line\u2028sep",
]
# Ids and model names with a control character are refused (they are stored in text columns
# and printed on one line); NUL used to crash the COPY with a traceback.
CONTROLS = ["\x00", "\t", "\n", "\r", "\x1b[2J", "\x7f", "\x85"]


def stored(engine: Engine, batch_id: str) -> list[tuple[int, str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                requests_table.c.line_no,
                requests_table.c.custom_id,
                requests_table.c.model,
                requests_table.c.body,
            )
            .where(requests_table.c.batch_id == batch_id)
            .order_by(requests_table.c.line_no)
        ).all()
    return [tuple(r) for r in rows]


def test_copy_stores_awkward_values_exactly_as_the_validator_prepared_them(
    db: Engine, tmp_path: Path
) -> None:
    """The COPY rows are built by hand (text format): backslashes and non-ASCII in ids and
    models, and tabs, newlines and NUL in bodies, must arrive unchanged."""
    objs: list[dict[str, object]] = [
        {
            "custom_id": cid,
            "model": f"m\\{cid}",
            "messages": [{"role": "user", "content": f"say \\n {cid}\t\u0000 \u2028"}],
            "background": True,
        }
        for cid in TRICKY_IDS
    ]
    objs.append({"messages": [{"role": "user", "content": "x"}], "stop": ["\\t"]})  # default id
    path = tmp_path / "tricky.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(orjson.dumps(o) for o in objs) + b"\r\n\r\n")
    batch = load(db, path, default_model="dm\\1")
    expected = []
    for line_no, raw in enumerate(path.read_bytes()[3:].split(b"\r\n")[: len(objs)], 1):
        req = prepare_line(raw.decode(), line_no, default_model="dm\\1")
        expected.append((line_no, req.custom_id, req.model, req.body))
    assert stored(db, batch.id) == expected
    assert expected[-1][1:3] == (str(len(objs)), "dm\\1")
    with db.connect() as conn:
        row = conn.execute(select(requests_table).where(requests_table.c.line_no == 1)).one()
    assert (row.lease_token, row.attempts, row.ambiguous_submits, row.poll_count) == (0, 0, 0, 0)
    assert row.retries == 0 and row.status == "queued" and row.due_at is not None
    assert "background" not in orjson.loads(row.body)


def test_what_the_provider_would_refuse_is_refused_by_line(db: Engine, tmp_path: Path) -> None:
    """Issue 12: a made-up role, a user message without content and out-of-range parameters
    used to load, and fail (or be misread) only at the provider."""
    objs: list[dict[str, object]] = [
        {"model": "m", "messages": [{"role": "wizard", "content": "hi"}]},
        {"model": "m", "messages": [{"role": "user"}]},
        {"model": "m", "messages": MESSAGES, "max_tokens": -5},
        {"model": "m", "messages": MESSAGES, "temperature": 3, "top_p": 2, "n": 0},
        {"model": "m", "messages": [*MESSAGES, {"role": "tool", "content": "4"}]},
        {"model": "m", "messages": [*MESSAGES, {"role": "assistant", "tool_calls": [{}]}]},
    ]
    path = tmp_path / "provider.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(o) for o in objs))
    with pytest.raises(InputError) as info:
        load(db, path)
    message = str(info.value)
    assert f"{path}:1: messages.0.role: input should be 'system', 'developer', 'user'" in message
    assert f"{path}:2: messages.0.content: missing (a user message needs a text" in message
    assert f"{path}:3: max_tokens: input should be greater than or equal to 1" in message
    assert f"{path}:4: temperature: input should be less than or equal to 2; top_p: " in message
    assert "; n: input should be greater than or equal to 1" in message
    assert f"{path}:5: messages.1.tool_call_id: a tool message needs the id" in message
    assert info.value.total_problems == 5  # line 6: tool calls stand in for the content
    assert counts(db) == (0, 0)


def test_control_characters_in_ids_and_models_are_refused_by_line(
    db: Engine, tmp_path: Path
) -> None:
    """A model or custom_id with NUL used to crash the COPY with a traceback; any control
    character is now a line's problem, and nothing loads."""
    good = {"model": "m", "messages": MESSAGES}
    objs = [{**good, "model": f"m{c}"} for c in CONTROLS]
    objs += [{"custom_id": f"id{c}", **good} for c in CONTROLS]
    objs += [{"custom_id": "env\x00", "body": {**good, "model": "m\x00"}}]
    path = tmp_path / "controls.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(o) for o in objs))
    with pytest.raises(InputError) as info:
        load(db, path)
    message = str(info.value)
    assert info.value.total_problems == len(objs)
    for line_no, char in enumerate(CONTROLS, 1):
        code = f"(found U+{ord(char[0]):04X})"
        assert f"{path}:{line_no}: model must not contain control characters" in message
        assert f"{path}:{line_no + len(CONTROLS)}: custom_id must not contain control" in message
        assert message.count(code) >= 2
    assert f"{path}:{len(objs)}: custom_id must not contain" in message
    assert counts(db) == (0, 0)


def test_a_default_model_with_a_control_character_is_refused_on_every_line_using_it(
    db: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "plain.jsonl"
    lines = [{"messages": MESSAGES}, {"model": "named", "messages": MESSAGES}]
    path.write_bytes(b"\n".join(orjson.dumps(o) for o in lines))
    with pytest.raises(InputError) as info:
        load(db, path, default_model="gpt\x00")
    assert f"{path}:1: model must not contain control characters" in str(info.value)
    assert info.value.total_problems == 1
    assert counts(db) == (0, 0)


def test_nul_in_message_content_loads_and_is_kept(db: Engine, tmp_path: Path) -> None:
    """The body is stored as compact JSON text, where NUL and every other control character
    is an escape (\\u0000), never a raw character PostgreSQL would refuse."""
    content = "a\x00b\x1b[31m\r\n\x7f\x85"
    obj = {
        "custom_id": "nul",
        "model": "m",
        "messages": [{"role": "user", "content": content, "name": "n\x00"}],
        "metadata": {"k\x00": "v\x00"},
    }
    path = tmp_path / "nul.jsonl"
    path.write_bytes(orjson.dumps(obj))
    batch = load(db, path)
    [(_, _, _, body)] = stored(db, batch.id)
    assert "\x00" not in body and "\\u0000" in body
    assert orjson.loads(body) == {k: v for k, v in obj.items() if k != "custom_id"}


def test_many_buffers_load_in_order_and_a_late_duplicate_undoes_them_all(
    db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A few rows per buffer.
    monkeypatch.setattr("chatbatch.input.bulk_insert.COPY_BUFFER_BYTES", 500)
    lines = [
        orjson.dumps({"custom_id": f"r{i}", "model": "m", "messages": MESSAGES}) for i in range(300)
    ]
    path = tmp_path / "many.jsonl"
    path.write_bytes(b"\n".join(lines))
    batch = load(db, path)
    assert [r[1] for r in stored(db, batch.id)] == [f"r{i}" for i in range(300)]
    path.write_bytes(b"\n".join([*lines, lines[7]]))
    with pytest.raises(InputError) as info:
        load(db, path)
    assert f"{path}:301: duplicate custom_id 'r7' (first on line 8)" in str(info.value)
    assert counts(db) == (1, 300)


def test_a_bad_line_after_rows_were_sent_loads_nothing(
    db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("chatbatch.input.bulk_insert.COPY_BUFFER_BYTES", 200)
    lines = [orjson.dumps({"model": "m", "messages": MESSAGES}) for _ in range(50)]
    lines.append(b'{"model": "m", "messages": [], "custom_id": "x"}')
    lines.append(b"\xff\xfe")
    path = tmp_path / "late.jsonl"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(InputError) as info:
        load(db, path)
    assert f"{path}:51: messages: must not be empty" in str(info.value)
    assert f"{path}:52: invalid UTF-8 at byte 0" in str(info.value)
    assert counts(db) == (0, 0)


def test_the_embedded_sqlite_path_loads_the_same_rows(db: Engine, tmp_path: Path) -> None:
    """SQLite takes the chunked INSERT path; it stores what the COPY path stores."""
    from chatbatch.store.db import make_engine
    from chatbatch.store.migrate import upgrade

    objs = [{"custom_id": cid, "model": "m", "messages": MESSAGES} for cid in TRICKY_IDS]
    path = tmp_path / "both.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(o) for o in objs))
    sqlite = make_engine(f"sqlite:///{tmp_path / 'embedded.db'}")
    upgrade(sqlite)
    try:
        on_sqlite = stored(sqlite, load(sqlite, path).id)
    finally:
        sqlite.dispose()
    assert on_sqlite == stored(db, load(db, path).id)


# --- the command line ------------------------------------------------------------------------


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("command", ["load", "run"])
@pytest.mark.parametrize("extra", [[], ["--template", "{{ text }}"]])
def test_a_model_option_with_a_control_character_is_a_usage_error(
    db: Engine, tmp_path: Path, command: str, extra: list[str]
) -> None:
    path = tmp_path / ("rows.csv" if extra else "plain.jsonl")
    path.write_text("text\nhi\n" if extra else orjson.dumps({"messages": MESSAGES}).decode())
    output = ["-o", str(tmp_path / "out.jsonl"), "--dry-run"] if command == "run" else []
    result = invoke(command, str(path), *output, "--model", "gpt\x1b[2J", *extra)
    assert result.exit_code == 2, result.output
    assert "--model" in result.output and "control characters" in result.output
    assert "(found U+001B)" in result.output and "\x1b" not in result.output
    assert counts(db) == (0, 0)


def test_a_schema_with_a_remote_ref_is_refused_before_anything_loads(
    db: Engine, tmp_path: Path
) -> None:
    """It used to load, then fail at the first (paid) answer; now the load is a usage error."""
    schema = tmp_path / "answer.json"
    schema.write_bytes(orjson.dumps({"$ref": "https://example.invalid/x.json"}))
    path = tmp_path / "plain.jsonl"
    path.write_bytes(orjson.dumps({"model": "m", "messages": MESSAGES}))
    result = invoke("load", str(path), "--schema", str(schema))
    assert result.exit_code == 2, result.output
    assert f"{schema}: $ref 'https://example.invalid/x.json' does not resolve" in result.output
    assert counts(db) == (0, 0)


def test_a_param_out_of_range_is_a_usage_error(db: Engine, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("text\nhi\n")
    args = ["--template", "{{ text }}", "--model", "m", "--param", "max_tokens=-5"]
    result = invoke("load", str(path), *args)
    assert result.exit_code == 2, result.output
    assert "max_tokens: input should be greater than or equal to 1" in result.output
    assert counts(db) == (0, 0)
