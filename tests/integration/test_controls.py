"""Operator commands (cancel, retry, resume) on PostgreSQL, with the engine running for real."""

from __future__ import annotations

import io
import random
from datetime import timedelta

import orjson
import pytest
from engine_helpers import load, rows, run_to_end, run_with_current_settings, write_requests
from sqlalchemy import Engine, func, select, update

from chatbatch.operations import controls
from chatbatch.operations.retry import RETRYABLE_DEFAULT
from chatbatch.operations.retry import retry as retry_batch
from chatbatch.reporting.export import export_batch
from chatbatch.reporting.summary import batch_summary
from chatbatch.rules.outcomes import Accepted
from chatbatch.rules.states import Policy, RequestStatus, RowView, after_submit
from chatbatch.settings import get_settings
from chatbatch.store import claims, reads, sweeps, writes
from chatbatch.store.db import db_now
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import past_results_table as past
from chatbatch.store.models import requests_table as r
from simulator.answers import expected_usage
from worker.runtime import build_engine

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens", "billed_units")


def now_of(db: Engine):
    with db.connect() as conn:
        return db_now(conn)


def cancel(db: Engine, batch_id: str, *, discard: bool = False) -> controls.CommandResult:
    with db.begin() as conn:
        return controls.cancel(conn, batch_id, now=db_now(conn), discard=discard)


def retry(db: Engine, batch_id: str, *statuses: RequestStatus) -> controls.CommandResult:
    with db.begin() as conn:
        return retry_batch(conn, batch_id, now=db_now(conn), statuses=statuses or RETRYABLE_DEFAULT)


def summary_of(db: Engine, batch_id: str, warning: timedelta = timedelta(0)) -> dict:
    with db.connect() as conn:
        return batch_summary(conn, reads.resolve_batch(conn, batch_id), expiry_warning=warning)


def usage_sum(bodies: list, keys=USAGE_KEYS) -> dict[str, int]:
    return {k: sum(expected_usage(b)[k] for b in bodies) for k in keys}


@pytest.fixture
def ten_per_chunk(pg, monkeypatch):
    monkeypatch.setenv("CHATBATCH_CHUNK_SIZE", "10")
    get_settings.cache_clear()
    return pg


def submit_one_chunk(db: Engine) -> None:
    """Submit ten requests (one chunk) and stop, as a worker would between two tasks."""
    engine = build_engine(get_settings())
    try:
        assert engine.step() == 10
    finally:
        engine.close()


def test_cancel_stops_submitting_but_fetches_what_was_paid_for(ten_per_chunk, sim, tmp_path):
    db = ten_per_chunk
    sim.reconfigure(latency="0.5")
    bodies = write_requests(tmp_path / "in.jsonl", 30)
    batch_id = load(db, tmp_path / "in.jsonl")
    submit_one_chunk(db)

    result = cancel(db, batch_id)
    assert (result.status, result.changed) == ("cancelling", 20)
    assert "10 already submitted request(s) will be fetched" in result.message
    again = cancel(db, batch_id)
    assert again.changed == 0 and "already cancelling" in again.message

    summary = run_with_current_settings(db, batch_id)
    assert summary["status"] == "cancelled" and summary["finished_at"]
    assert summary["counts"]["succeeded"] == 10 and summary["counts"]["cancelled"] == 20
    assert sim.stats()["accepted"] == 10
    assert {k: summary["usage"][k] for k in USAGE_KEYS} == usage_sum(bodies[:10])
    cancelled = [row for row in rows(db, batch_id) if row.status == "cancelled"]
    assert {row.error_message for row in cancelled} == {sweeps.CANCELLED_BEFORE_SUBMISSION}
    assert cancel(db, batch_id).message == "nothing to cancel: the batch is cancelled"


def test_cancel_discard_stops_fetching_and_retry_brings_requests_back(ten_per_chunk, sim, tmp_path):
    db = ten_per_chunk
    sim.reconfigure(latency="0.3")
    bodies = write_requests(tmp_path / "in.jsonl", 30)
    batch_id = load(db, tmp_path / "in.jsonl")
    submit_one_chunk(db)

    result = cancel(db, batch_id, discard=True)
    assert (result.status, result.changed) == ("cancelled", 30)
    gets_before = sim.stats()["gets"]
    engine = build_engine(get_settings())
    try:
        engine.housekeeping()
        assert engine.drain(budget_seconds=1.0) == 0
    finally:
        engine.close()
    assert sim.stats()["gets"] == gets_before
    assert summary_of(db, batch_id)["counts"]["cancelled"] == 30

    requeued = retry(db, batch_id, RequestStatus.CANCELLED)
    assert (requeued.status, requeued.changed) == ("running", 30)
    summary = run_with_current_settings(db, batch_id)
    assert summary["status"] == "completed" and summary["counts"]["succeeded"] == 30
    assert sim.stats()["accepted"] == 40  # the ten discarded ones were paid for twice
    assert {k: summary["usage"][k] for k in USAGE_KEYS} == usage_sum(bodies)
    assert all(row.retries == 1 and row.attempts == 1 for row in rows(db, batch_id))


def test_submissions_in_flight_during_a_cancel_are_settled(pg, tmp_path):
    """With --discard, a POST that lands after the cancel and a lost worker's submission both
    end cancelled; neither is submitted again."""
    write_requests(tmp_path / "in.jsonl", 4)
    batch_id = load(pg, tmp_path / "in.jsonl")
    policy = Policy.from_settings(get_settings())
    with pg.begin() as conn:  # two POSTs start; one worker dies, the other's answer lands late
        now = db_now(conn)
        landing, lost = claims.claim_for_submit(conn, now=now, limit=2, lease_seconds=30)
    assert cancel(pg, batch_id, discard=True).changed == 2  # the two still queued

    accepted = Accepted(remote_id="task-1", remote_status="pending", expires_at=None)
    view = RowView(status=RequestStatus.SUBMITTING, attempts=1)
    transition = after_submit(view, accepted, now=now, policy=policy, rng=random.Random(1))
    with pg.begin() as conn:
        assert writes.apply_transition(
            conn,
            landing.id,
            batch_id=batch_id,
            expected=RequestStatus.SUBMITTING,
            lease_token=landing.lease_token,
            transition=transition,
        )
        conn.execute(update(r).where(r.c.id == lost.id).values(due_at=now - timedelta(seconds=1)))
    engine = build_engine(get_settings())
    try:
        engine.housekeeping()
    finally:
        engine.close()
    final = {row.id: row for row in rows(pg, batch_id)}
    assert final[landing.id].status == "cancelled"
    assert final[landing.id].remote_id == "task-1"  # kept, so the result can still be found
    assert final[lost.id].status == "cancelled" and final[lost.id].ambiguous_submits == 1
    summary = summary_of(pg, batch_id)
    assert summary["status"] == "cancelled" and summary["counts"]["cancelled"] == 4


def test_retry_requeues_failures_and_exports_only_the_latest_outcome(pg, engine, sim, tmp_path):
    sim.reconfigure(fail_rate=1.0)
    bodies = write_requests(tmp_path / "in.jsonl", 12)
    batch_id = load(pg, tmp_path / "in.jsonl")
    summary = run_to_end(engine, pg, batch_id)
    assert summary["status"] == "completed" and summary["counts"]["failed"] == 12

    result = retry(pg, batch_id)
    assert (result.status, result.changed) == ("running", 12)
    assert retry(pg, batch_id).message == "nothing to retry: no request is expired,failed"
    sim.reconfigure(fail_rate=0.0)
    summary = run_to_end(engine, pg, batch_id)
    assert summary["status"] == "completed" and summary["counts"]["succeeded"] == 12

    out = io.BytesIO()
    with pg.connect() as conn:
        assert export_batch(conn, batch_id, out, "jsonl") == 12
        archived = conn.execute(
            select(past.c.status, past.c.round, func.count()).group_by(past.c.status, past.c.round)
        ).all()
    lines = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert [x["custom_id"] for x in lines] == [f"c{i}" for i in range(12)]
    assert all(x["error"] is None for x in lines)
    assert [tuple(a) for a in archived] == [("failed", 1, 12)]
    assert {k: summary["usage"][k] for k in USAGE_KEYS} == usage_sum(bodies)


def test_usage_stays_exact_when_succeeded_requests_are_run_again(pg, engine, sim, tmp_path):
    bodies = write_requests(tmp_path / "in.jsonl", 8)
    batch_id = load(pg, tmp_path / "in.jsonl")
    run_to_end(engine, pg, batch_id)
    assert retry(pg, batch_id, RequestStatus.SUCCEEDED).changed == 8
    summary = run_to_end(engine, pg, batch_id)
    assert summary["counts"]["succeeded"] == 8
    once = usage_sum(bodies)
    assert {k: summary["usage"][k] for k in USAGE_KEYS} == {k: 2 * v for k, v in once.items()}
    assert sim.stats()["accepted"] == 16


def test_retry_keeps_a_paused_batch_paused_and_resume_is_idempotent(pg, sim, tmp_path):
    write_requests(tmp_path / "in.jsonl", 3)
    batch_id = load(pg, tmp_path / "in.jsonl")
    with pg.begin() as conn:
        writes.pause_batch(conn, batch_id, "provider answered 402")
        conn.execute(update(r).values(status="failed", error_code="x"))
    result = retry(pg, batch_id)
    assert (result.status, result.changed) == ("paused", 3)
    assert "resume" in result.message
    with pg.begin() as conn:
        assert controls.resume(conn, batch_id).message == "resumed"
    with pg.begin() as conn:
        assert controls.resume(conn, batch_id).message == "not paused (the batch is running)"
    assert summary_of(pg, batch_id)["pause_reason"] is None


def test_status_warns_when_submitted_results_near_their_deadline(ten_per_chunk, sim, tmp_path):
    db = ten_per_chunk
    sim.reconfigure(latency="30")
    write_requests(tmp_path / "in.jsonl", 10)
    batch_id = load(db, tmp_path / "in.jsonl")
    submit_one_chunk(db)
    deadline = now_of(db) + timedelta(hours=20)
    with db.begin() as conn:
        conn.execute(
            update(r).where(r.c.id.in_(select(r.c.id).limit(4))).values(expires_at=deadline)
        )
    warned = summary_of(db, batch_id, warning=timedelta(days=2))["expiring"]
    assert warned["count"] == 4
    assert warned["earliest_deadline"] == deadline.isoformat()
    assert summary_of(db, batch_id, warning=timedelta(hours=1))["expiring"]["count"] == 0


def test_retry_refuses_unfinished_statuses(pg, tmp_path):
    write_requests(tmp_path / "in.jsonl", 1)
    batch_id = load(pg, tmp_path / "in.jsonl")
    with pytest.raises(ValueError, match="only finished requests"):
        retry(pg, batch_id, RequestStatus.QUEUED)


def test_delete_refuses_a_batch_still_worked_and_removes_a_finished_one(pg, tmp_path) -> None:
    write_requests(tmp_path / "in.jsonl", 3)
    batch_id = load(pg, tmp_path / "in.jsonl")
    with pytest.raises(controls.ChatbatchError, match="cancel it first"), pg.begin() as conn:
        controls.delete(conn, batch_id)
    with pg.begin() as conn:
        conn.execute(update(b).where(b.c.id == batch_id).values(status="cancelling"))
    with pytest.raises(controls.ChatbatchError, match="--discard"), pg.begin() as conn:
        controls.delete(conn, batch_id)
    with pg.begin() as conn:  # paused with a request whose result is paid for
        conn.execute(update(b).where(b.c.id == batch_id).values(status="paused"))
        conn.execute(update(r).where(r.c.custom_id == "c0").values(status="submitted"))
    with pytest.raises(controls.ChatbatchError, match="in flight"), pg.begin() as conn:
        controls.delete(conn, batch_id)
    with pg.begin() as conn:
        conn.execute(update(r).values(status=RequestStatus.FAILED))
    retry(pg, batch_id)  # some history in past_results
    with pg.begin() as conn:
        conn.execute(update(r).values(status=RequestStatus.FAILED))
        conn.execute(update(b).where(b.c.id == batch_id).values(status="completed"))
    with pg.begin() as conn:
        result = controls.delete(conn, batch_id)
    assert result.changed == 3
    with pg.connect() as conn:
        for table in (b, r, past):
            column = table.c.id if table is b else table.c.batch_id
            assert conn.execute(select(func.count()).where(column == batch_id)).scalar_one() == 0
