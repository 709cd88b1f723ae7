"""Archiving on PostgreSQL: a finished batch's requests leave the hot table whole, everything
that reads a batch reads it as before, nothing can change it until it is unarchived, and
``--older-than`` picks only batches finished long enough ago."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from engine_helpers import load, run_to_end, write_requests
from sqlalchemy import Engine, func, select, update

from chatbatch.errors import ChatbatchError
from chatbatch.operations import archive, controls
from chatbatch.operations.retry import retry as retry_batch
from chatbatch.reporting.export import export_batch
from chatbatch.reporting.export.python import export_python
from chatbatch.reporting.report_data import collect
from chatbatch.reporting.request_detail import request_detail
from chatbatch.reporting.summary import batch_summary
from chatbatch.reporting.usage import Grouping, usage_groups
from chatbatch.rules.states import RequestStatus
from chatbatch.store import reads
from chatbatch.store.db import db_now
from chatbatch.store.models import archived_requests_table as archived
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import past_results_table as past
from chatbatch.store.models import requests_table as r

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def count(db: Engine, table, batch_id: str) -> int:
    with db.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(table).where(table.c.batch_id == batch_id)
        ).scalar_one()


def everything_read(db: Engine, batch_id: str) -> dict:
    """What exports (both paths), status, the report, show and usage say about the batch."""
    exports = {}
    for fmt in ("jsonl", "csv"):
        sql, python = io.BytesIO(), io.BytesIO()
        with db.connect() as conn:
            export_batch(conn, batch_id, sql, fmt)
        with db.connect() as conn:  # a server-side cursor of its own
            export_python(conn, batch_id, python, fmt)
        assert sql.getvalue() == python.getvalue()  # both paths read the archive alike
        exports[fmt] = sql.getvalue()
    with db.connect() as conn:
        batch = reads.resolve_batch(conn, batch_id)
        summary = dict(batch_summary(conn, batch, expiry_warning=timedelta(0)))
        summary.pop("archived_at")
        return {
            "exports": exports,
            "summary": summary,
            "report": collect(conn, batch, prices=None, now=NOW),
            "detail": request_detail(conn, batch, "c3", prices=None),
            "usage": usage_groups(conn, by=Grouping.MODEL, batch_id=batch_id),
        }


def archive_now(db: Engine, ref: str) -> controls.CommandResult:
    with db.begin() as conn:
        return archive.archive(conn, ref, now=db_now(conn))


def finished_batch(engine, db: Engine, tmp_path, n: int = 12, name: str = "in") -> str:
    write_requests(tmp_path / f"{name}.jsonl", n)
    batch_id = load(db, tmp_path / f"{name}.jsonl")
    assert run_to_end(engine, db, batch_id)["status"] == "completed"
    return batch_id


def test_an_archived_batch_reads_as_before_from_outside_the_hot_table(engine, pg, tmp_path):
    batch_id = finished_batch(engine, pg, tmp_path)
    with pg.begin() as conn:  # a second round, so earlier outcomes sit in past_results
        retry_batch(conn, batch_id, now=db_now(conn), statuses=[RequestStatus.SUCCEEDED])
    run_to_end(engine, pg, batch_id)
    before = everything_read(pg, batch_id)

    result = archive_now(pg, batch_id)

    assert (result.changed, result.message) == (12, "archived 12 request(s)")
    assert (count(pg, r, batch_id), count(pg, archived, batch_id)) == (0, 12)
    assert count(pg, past, batch_id) == 12  # earlier rounds stay, and still count in usage
    assert everything_read(pg, batch_id) == before
    with pg.connect() as conn:
        summary = batch_summary(
            conn, reads.resolve_batch(conn, batch_id), expiry_warning=timedelta(0)
        )
    assert summary["archived_at"] is not None
    assert archive_now(pg, batch_id).message == "already archived"


def test_an_archived_batch_cannot_change_until_unarchived(engine, pg, tmp_path):
    batch_id = finished_batch(engine, pg, tmp_path)
    archive_now(pg, batch_id)
    with pg.begin() as conn:
        name = reads.resolve_batch(conn, batch_id).name
    for command in (
        lambda conn: retry_batch(
            conn, batch_id, now=db_now(conn), statuses=[RequestStatus.SUCCEEDED]
        ),
        lambda conn: controls.resume(conn, batch_id),
        lambda conn: controls.cancel(conn, batch_id, now=db_now(conn), discard=True),
    ):
        refused = pytest.raises(ChatbatchError, match=f"{name} is archived; `chatbatch unarchive")
        with refused, pg.begin() as conn:
            command(conn)

    with pg.begin() as conn:
        assert archive.unarchive(conn, batch_id).message == "unarchived 12 request(s)"
    assert (count(pg, r, batch_id), count(pg, archived, batch_id)) == (12, 0)
    with pg.begin() as conn:
        retried = retry_batch(conn, batch_id, now=db_now(conn), statuses=[RequestStatus.SUCCEEDED])
    assert retried.changed == 12
    assert run_to_end(engine, pg, batch_id)["counts"]["succeeded"] == 12


def test_a_batch_that_may_still_be_worked_is_not_archived(engine, pg, tmp_path):
    write_requests(tmp_path / "in.jsonl", 5)
    batch_id = load(pg, tmp_path / "in.jsonl")

    with pytest.raises(ChatbatchError, match=r"is running with 5 request\(s\) not finished"):
        archive_now(pg, batch_id)
    with pg.begin() as conn:
        conn.execute(update(b).where(b.c.id == batch_id).values(status="paused"))
    with pytest.raises(ChatbatchError, match="only a completed or cancelled batch"):
        archive_now(pg, batch_id)
    assert (count(pg, r, batch_id), count(pg, archived, batch_id)) == (5, 0)

    with pg.begin() as conn:
        controls.cancel(conn, batch_id, now=db_now(conn), discard=True)
    assert archive_now(pg, batch_id).changed == 5  # cancelled: nothing left to work


def test_older_than_takes_only_batches_finished_before_the_cutoff(engine, pg, tmp_path):
    old = finished_batch(engine, pg, tmp_path, 3, name="old")
    new = finished_batch(engine, pg, tmp_path, 3, name="new")
    write_requests(tmp_path / "running.jsonl", 2)
    running = load(pg, tmp_path / "running.jsonl")
    with pg.begin() as conn:
        now = db_now(conn)
        conn.execute(update(b).where(b.c.id == old).values(finished_at=now - timedelta(days=8)))
        conn.execute(update(b).where(b.c.id == running).values(created_at=now - timedelta(days=9)))

    with pg.connect() as conn:
        assert archive.archivable_before(conn, now - timedelta(days=7)) == [old]
        assert archive.archivable_before(conn, now + timedelta(seconds=1)) == [old, new]
    archive_now(pg, old)
    with pg.connect() as conn:
        assert archive.archivable_before(conn, now + timedelta(seconds=1)) == [new]


def test_deleting_an_archived_batch_removes_its_archived_requests(engine, pg, tmp_path):
    batch_id = finished_batch(engine, pg, tmp_path, 4)
    archive_now(pg, batch_id)
    with pg.begin() as conn:
        result = controls.delete(conn, batch_id)
    assert result.changed == 4
    assert count(pg, archived, batch_id) == 0
