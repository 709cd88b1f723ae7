"""Answers checked against the batch's JSON Schema while the engine runs against the simulator:
invalid ones are archived and asked again, on PostgreSQL and on the embedded SQLite path."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from engine_helpers import load, rows, run_to_end, write_requests
from sqlalchemy import Engine, select, update

from chatbatch.rules.outcomes import Completed
from chatbatch.rules.states import SCHEMA_INVALID, AnswerCheck, Policy, RequestStatus, after_poll
from chatbatch.rules.structured import answer_problem, response_format, schema_text
from chatbatch.settings import get_settings
from chatbatch.store import claims, reads
from chatbatch.store.db import db_now, get_engine
from chatbatch.store.migrate import upgrade
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import past_results_table as past
from chatbatch.store.models import requests_table as r
from chatbatch.store.writes import Write, apply_transitions
from simulator.answers import expected_content, expected_usage
from worker.engine import Engine as BatchEngine
from worker.runtime import build_engine

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["label", "confidence"],
    "additionalProperties": False,
}
SCHEMA_JSON = schema_text(SCHEMA)


def load_with_schema(
    db: Engine, path: Path, n: int, *, retry_invalid: int, schema: bool = True
) -> tuple[str, list[dict[str, Any]]]:
    """A batch of ``n`` requests asking for ``SCHEMA``, stored with the schema as ``load
    --schema`` would store it (``schema=False``: the requests ask, the batch does not check)."""
    bodies = write_requests(path, n, response_format=response_format(SCHEMA, name="labels"))
    batch_id = load(db, path)
    with db.begin() as conn:
        conn.execute(
            update(b)
            .where(b.c.id == batch_id)
            .values(response_schema=SCHEMA_JSON if schema else None, retry_invalid=retry_invalid)
        )
    return batch_id, bodies


def archived(db: Engine, batch_id: str) -> list[Any]:
    with db.connect() as conn:
        query = select(past).where(past.c.batch_id == batch_id).order_by(past.c.id)
        return list(conn.execute(query))


def usage_of(db: Engine, batch_id: str) -> dict[str, int]:
    with db.connect() as conn:
        return reads.usage_totals(conn, batch_id)


def check_asked_again(db: Engine, batch_id: str, bodies: list[dict[str, Any]], summary: dict):
    """Every request succeeded; invalid answers were asked again at most twice, each archived
    with its usage, and the status summary agrees."""
    assert summary["status"] == "completed"
    assert summary["counts"]["succeeded"] == len(bodies)
    stored = rows(db, batch_id)
    for body, row in zip(bodies, stored, strict=True):
        assert 0 <= row.invalid_retries <= 2 and row.retries == row.invalid_retries
        if row.schema_valid:
            assert row.content == expected_content(body) and row.schema_error is None
        else:  # kept as the model gave it, once the re-asks were used up
            assert row.invalid_retries == 2 and row.schema_error
            assert answer_problem(row.content, SCHEMA_JSON) == row.schema_error
    asked_again = sum(row.invalid_retries for row in stored)
    valid = sum(bool(row.schema_valid) for row in stored)
    assert asked_again >= 1 and valid >= len(bodies) * 0.75
    history = archived(db, batch_id)
    assert len(history) == asked_again
    by_id = {row.id: row for row in stored}
    for old in history:
        content = orjson.loads(old.response)["choices"][0]["message"]["content"]
        assert old.error_code == SCHEMA_INVALID and old.status == "succeeded"
        assert old.error_message == answer_problem(content, SCHEMA_JSON)
        assert old.remote_id and old.submitted_at and old.attempts >= 1
        assert 1 <= old.round <= by_id[old.request_id].invalid_retries
    expected = sum(
        expected_usage(body)["total_tokens"] * (1 + row.invalid_retries)
        for body, row in zip(bodies, stored, strict=True)
    )
    assert usage_of(db, batch_id)["total_tokens"] == expected
    assert summary["schema"] == {
        "valid": valid,
        "invalid": len(bodies) - valid,
        "pass_rate": valid / len(bodies),
        "retried": asked_again,
    }
    return asked_again


def test_invalid_answers_are_asked_again_and_their_usage_kept(pg, engine, sim, tmp_path) -> None:
    sim.reconfigure(invalid_json_rate=0.3)
    batch_id, bodies = load_with_schema(pg, tmp_path / "in.jsonl", 40, retry_invalid=2)
    summary = run_to_end(engine, pg, batch_id)
    asked_again = check_asked_again(pg, batch_id, bodies, summary)
    assert sim.stats()["accepted"] == 40 + asked_again


def test_without_retries_invalid_answers_are_kept_and_flagged(pg, engine, sim, tmp_path) -> None:
    sim.reconfigure(invalid_json_rate=1.0)
    batch_id, _ = load_with_schema(pg, tmp_path / "in.jsonl", 4, retry_invalid=0)
    summary = run_to_end(engine, pg, batch_id)
    assert summary["counts"]["succeeded"] == 4
    assert summary["schema"] == {"valid": 0, "invalid": 4, "pass_rate": 0.0, "retried": 0}
    assert all(row.schema_valid is False and row.schema_error for row in rows(pg, batch_id))
    assert archived(pg, batch_id) == []


def test_a_batch_without_a_schema_is_not_judged(pg, engine, sim, tmp_path) -> None:
    sim.reconfigure(invalid_json_rate=1.0)
    batch_id, _ = load_with_schema(pg, tmp_path / "in.jsonl", 4, retry_invalid=2, schema=False)
    summary = run_to_end(engine, pg, batch_id)
    assert summary["counts"]["succeeded"] == 4 and "schema" not in summary
    assert all(row.schema_valid is None for row in rows(pg, batch_id))
    assert archived(pg, batch_id) == []


@pytest.fixture
def sqlite(pg: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Engine]:
    """The embedded default: a migrated SQLite file, with the test's settings otherwise (the
    fast policy, the simulator as the provider)."""
    monkeypatch.setenv("CHATBATCH_DATABASE_URL", f"sqlite:///{tmp_path / 'embedded.db'}")
    get_settings.cache_clear()
    get_engine.cache_clear()
    db = get_engine()
    upgrade(db)
    yield db
    db.dispose()
    get_engine.cache_clear()


def test_invalid_answers_are_asked_again_on_sqlite_too(sqlite, sim, tmp_path) -> None:
    sim.reconfigure(invalid_json_rate=0.3)
    batch_id, bodies = load_with_schema(sqlite, tmp_path / "in.jsonl", 20, retry_invalid=2)
    worker: BatchEngine = build_engine(get_settings())
    try:
        summary = run_to_end(worker, sqlite, batch_id)
    finally:
        worker.close()
    check_asked_again(sqlite, batch_id, bodies, summary)


@pytest.mark.parametrize("backend", ["pg", "sqlite"])
def test_a_stale_requeue_archives_nothing(request, backend: str, tmp_path) -> None:
    """The archive is guarded like the update: a worker whose lease was taken over neither
    archives the answer nor requeues the row; the owner does both."""
    db: Engine = request.getfixturevalue(backend)
    batch_id, _ = load_with_schema(db, tmp_path / "in.jsonl", 1, retry_invalid=1)
    with db.begin() as conn:
        now = db_now(conn)
        conn.execute(update(r).values(status="submitted", remote_id="t1", submitted_at=now))
        (first,) = claims.claim_for_poll(conn, now=now, limit=1, lease_seconds=30)
        conn.execute(update(r).values(due_at=now - timedelta(seconds=1)))
        (second,) = claims.claim_for_poll(conn, now=now, limit=1, lease_seconds=30)
    body = {"choices": [{"message": {"content": "{}"}}], "usage": {"total_tokens": 9}}
    check = AnswerCheck(SCHEMA_JSON, retry_invalid=1)
    writes = [
        Write(
            claim.id,
            claim.batch_id,
            RequestStatus.SUBMITTED,
            claim.lease_token,
            after_poll(
                claim.view(),
                Completed(orjson.dumps(body).decode(), body),
                now=now,
                policy=Policy(),
                rng=random.Random(1),
                check=check,
            ),
        )
        for claim in (first, second)
    ]
    assert all(write.transition.archive for write in writes)
    with db.begin() as conn:
        assert apply_transitions(conn, writes[:1]) == 0  # stale
    assert archived(db, batch_id) == []
    with db.begin() as conn:
        assert apply_transitions(conn, writes[1:]) == 1
    (old,) = archived(db, batch_id)
    assert (old.remote_id, old.round, old.total_tokens) == ("t1", 1, 9)
    assert old.error_code == SCHEMA_INVALID and "required property" in old.error_message
    (row,) = rows(db, batch_id)
    assert (row.status, row.invalid_retries, row.retries, row.remote_id) == ("queued", 1, 1, None)
    assert usage_of(db, batch_id)["total_tokens"] == 9
