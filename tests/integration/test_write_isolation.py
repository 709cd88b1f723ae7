"""One outcome PostgreSQL refuses fails its own request, never its neighbours; a batch is never
closed while a retry is requeueing its requests."""

from __future__ import annotations

import threading
from datetime import timedelta

from engine_helpers import load, rows, write_requests
from sqlalchemy import Engine, select, update

from chatbatch.operations.retry import retry as retry_batch
from chatbatch.rules.states import RequestStatus, Transition
from chatbatch.store import claims, sweeps, writes
from chatbatch.store.db import db_now
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import requests_table as r
from worker.engine import Engine as BatchEngine


def claim_all(db: Engine, n: int) -> list[claims.SubmitClaim]:
    with db.begin() as conn:
        return claims.claim_for_submit(conn, now=db_now(conn), limit=n, lease_seconds=300)


def accepted(claim: claims.SubmitClaim, remote_id: str, now) -> writes.Write:
    changes = {"remote_id": remote_id, "remote_status": "pending", "submitted_at": now}
    transition = Transition(RequestStatus.SUBMITTED, now + timedelta(seconds=5), changes)
    return writes.Write(
        claim.id, claim.batch_id, RequestStatus.SUBMITTING, claim.lease_token, transition
    )


def test_a_refused_write_fails_its_request_and_stores_every_neighbour(
    pg: Engine, engine: BatchEngine, tmp_path
) -> None:
    write_requests(tmp_path / "in.jsonl", 5)
    batch_id = load(pg, tmp_path / "in.jsonl")
    claims = claim_all(pg, 5)
    with pg.connect() as conn:
        now = db_now(conn)
    writes = [accepted(claim, f"task-{claim.id}", now) for claim in claims]
    poisoned = claims[2].id
    # Text cannot hold NUL: PostgreSQL refuses the whole batched UPDATE.
    writes[2] = accepted(claims[2], "task\x00x", now)
    engine._recorder.write(writes, now)  # must not raise
    by_id = {row.id: row for row in rows(pg, batch_id)}
    assert by_id[poisoned].status == RequestStatus.FAILED
    assert by_id[poisoned].error_code == "unstorable_answer"
    assert "NUL" in by_id[poisoned].error_message
    others = [row for row in by_id.values() if row.id != poisoned]
    assert {row.status for row in others} == {RequestStatus.SUBMITTED}
    assert all(row.remote_id == f"task-{row.id}" for row in others)


def test_finishing_never_closes_a_batch_that_a_retry_is_requeueing(pg: Engine, tmp_path) -> None:
    write_requests(tmp_path / "in.jsonl", 2)
    batch_id = load(pg, tmp_path / "in.jsonl")
    with pg.begin() as conn:
        conn.execute(update(r).values(status=RequestStatus.FAILED, completed_at=db_now(conn)))
    retrying = pg.connect()
    transaction = retrying.begin()
    retry_batch(
        retrying, batch_id, now=db_now(retrying), statuses=[RequestStatus.FAILED]
    )  # holds the batch row until it commits
    finished: list[list[str]] = []

    def finish() -> None:
        with pg.begin() as conn:
            finished.append(sweeps.finish_batches(conn, now=db_now(conn)))

    closer = threading.Thread(target=finish)
    closer.start()
    closer.join(timeout=2)
    transaction.commit()
    retrying.close()
    closer.join(timeout=10)
    assert finished == [[]]
    with pg.connect() as conn:
        assert conn.execute(select(b.c.status).where(b.c.id == batch_id)).scalar_one() == "running"


def test_process_and_retry_reopen_a_batch_closed_with_work_left(pg: Engine, tmp_path) -> None:
    write_requests(tmp_path / "in.jsonl", 2)
    batch_id = load(pg, tmp_path / "in.jsonl")
    with pg.begin() as conn:  # as the old finishing race left it: completed, requests queued
        conn.execute(update(b).where(b.c.id == batch_id).values(status="completed"))
    with pg.begin() as conn:
        result = retry_batch(conn, batch_id, now=db_now(conn), statuses=[RequestStatus.FAILED])
    assert result.status == "running" and "reopened" in result.message
    with pg.begin() as conn:
        assert not sweeps.reopen_unfinished(conn, batch_id)  # open already: nothing to do
        conn.execute(update(r).values(status=RequestStatus.SUCCEEDED))
        assert sweeps.finish_batches(conn, now=db_now(conn)) == [batch_id]
        assert not sweeps.reopen_unfinished(conn, batch_id)  # finished for real: stays closed
