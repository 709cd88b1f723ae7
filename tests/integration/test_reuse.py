"""``load --reuse``: requests identical to ones that succeeded in an earlier batch take that
answer instead of being sent again, on PostgreSQL and on the embedded SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, update

from chatbatch.input.reuse import COPIED
from chatbatch.settings import get_settings
from chatbatch.store.db import get_engine
from chatbatch.store.models import requests_table as r
from cli.main import cli

ANSWER = '{"label": "positive", "confidence": 0.9}'


@pytest.fixture(params=["postgresql", "sqlite"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    """The CLI's settings aimed at the test PostgreSQL database or at a SQLite file."""
    postgres = request.getfixturevalue("db")  # also clears the environment of CHATBATCH_*
    if request.param == "postgresql":
        yield postgres
        return
    monkeypatch.setenv("CHATBATCH_DATABASE_URL", f"sqlite:///{tmp_path / 'reuse.db'}")
    get_settings.cache_clear()
    get_engine.cache_clear()
    yield get_engine()
    get_engine().dispose()
    get_engine.cache_clear()


def load(path: Path, *options: str) -> dict[str, Any]:
    args = ["load", str(path), "--template", "Label: {{ text }}", "--model", "m", "--json"]
    result = CliRunner().invoke(cli, [*args, "--id-column", "id", *options])
    assert result.exit_code == 0, result.output
    return {**orjson.loads(result.stdout), "stderr": result.stderr}


def rows(engine: Engine, batch_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        found = conn.execute(select(r).where(r.c.batch_id == batch_id)).all()
    return {row.custom_id: row for row in found}


def answer(engine: Engine, batch_id: str, custom_ids: list[str], **extra: Any) -> None:
    """Mark requests succeeded as a worker would have, with an answer and its usage."""
    response = {"choices": [{"message": {"role": "assistant", "content": ANSWER}}]}
    with engine.begin() as conn:
        conn.execute(
            update(r)
            .where(r.c.batch_id == batch_id, r.c.custom_id.in_(custom_ids))
            .values(
                status="succeeded",
                http_status=200,
                response=orjson.dumps(response).decode(),
                content=ANSWER,
                finish_reason="stop",
                response_model="m-2026-01-01",
                remote_id="task-1",
                completed_at=datetime(2026, 1, 1, tzinfo=UTC),
                prompt_tokens=20,
                completion_tokens=7,
                total_tokens=27,
                **extra,
            )
        )


def test_reuse_takes_earlier_answers_of_identical_requests(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "nightly.csv"
    path.write_text("id,text\na,great kettle\nb,broke at once\nc,it is ok\nd,meh\n")
    first = load(path)
    answer(store, first["id"], ["a", "b"])
    answer(store, first["id"], ["c"], schema_valid=False)  # did not follow its schema: not reused
    path.write_text("id,text\na,great kettle\nb,broke at once\nc,it is ok\nd,changed text\n")

    second = load(path, "--reuse")
    assert second["reused"] == 2
    assert "reused 2 answer(s) from earlier batches" in second["stderr"]
    earlier = rows(store, first["id"])
    now = rows(store, second["id"])
    for custom_id in ("a", "b"):
        row = now[custom_id]
        assert row.status == "reused"
        assert row.reused_from == earlier[custom_id].id
        source = earlier[custom_id]
        assert {"response", "content", "finish_reason", "http_status"} <= set(COPIED)
        for column in COPIED:
            assert getattr(row, column) == getattr(source, column), column
        assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (None, None, None)
        assert row.completed_at is not None
    for custom_id in ("c", "d"):
        assert now[custom_id].status == "queued" and now[custom_id].reused_from is None


def test_without_reuse_everything_is_sent_again(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "again.csv"
    path.write_text("id,text\na,same\n")
    first = load(path)
    answer(store, first["id"], ["a"])
    second = load(path)
    assert "reused" not in second
    assert rows(store, second["id"])["a"].status == "queued"


def test_a_changed_schema_is_a_different_request(store: Engine, tmp_path: Path) -> None:
    """The fingerprint covers the whole body as sent, response_format included."""
    path = tmp_path / "schema.csv"
    path.write_text("id,text\na,same\n")
    schema = tmp_path / "label.json"
    schema.write_text('{"type": "object", "properties": {"label": {"type": "string"}}}')
    first = load(path, "--schema", str(schema))
    answer(store, first["id"], ["a"])
    assert load(path, "--reuse")["reused"] == 0  # no schema now: not the same request
    assert load(path, "--reuse", "--schema", str(schema))["reused"] == 1
