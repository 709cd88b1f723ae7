"""Loading into PostgreSQL: real files as they come, and bad files refused whole."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, func, select

from chatbatch.errors import ChatbatchError, InputError
from chatbatch.loading import load_jsonl
from chatbatch.models import batches_table, requests_table

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
