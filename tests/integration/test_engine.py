"""The engine against real PostgreSQL and the simulator over real HTTP."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, select, update

from chatbatch import queries
from chatbatch.db import db_now
from chatbatch.loading import load_jsonl
from chatbatch.models import requests_table as r
from chatbatch.settings import get_settings
from chatbatch.states import RequestStatus, Transition
from chatbatch.summary import batch_summary
from simulator.answers import expected_content, expected_usage
from worker.engine import Engine as BatchEngine
from worker.runtime import build_engine


def write_requests(path: Path, n: int, **extra: object) -> list[dict[str, object]]:
    bodies = []
    with path.open("w") as fh:
        for i in range(n):
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"request number {i}"}],
                **extra,
            }
            bodies.append(body)
            fh.write(orjson.dumps({"custom_id": f"c{i}", "body": body}).decode() + "\n")
    return bodies


def load(db: Engine, path: Path) -> str:
    with db.begin() as conn:
        return load_jsonl(conn, path, name=None, default_model=None, max_line_bytes=1 << 20).id


def run_to_end(engine: BatchEngine, db: Engine, batch_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        engine.housekeeping()
        if not engine.drain(budget_seconds=1.0):
            time.sleep(0.05)
        with db.connect() as conn:
            summary = batch_summary(conn, queries.resolve_batch(conn, batch_id))
        if summary["status"] != "running":
            return summary
    raise AssertionError(f"batch did not finish: {summary}")


def rows(db: Engine, batch_id: str) -> list:
    with db.connect() as conn:
        return conn.execute(select(r).where(r.c.batch_id == batch_id).order_by(r.c.line_no)).all()


def run_with_current_settings(db: Engine, batch_id: str, timeout: float = 60) -> dict:
    """Run the batch with an engine built from the settings as the test left them."""
    built = build_engine(get_settings())
    try:
        return run_to_end(built, db, batch_id, timeout)
    finally:
        built.close()


@pytest.fixture
def engine(pg: Engine):
    built = build_engine(get_settings())
    yield built
    built.close()


def test_every_result_lands_on_its_own_request(pg, engine, sim, tmp_path) -> None:
    bodies = write_requests(tmp_path / "in.jsonl", 60, thinking={"type": "enabled"})
    batch_id = load(pg, tmp_path / "in.jsonl")
    summary = run_to_end(engine, pg, batch_id)
    assert summary["status"] == "completed"
    assert summary["counts"]["succeeded"] == 60
    stored = rows(pg, batch_id)
    for body, row in zip(bodies, stored, strict=True):
        assert row.content == expected_content(body)
        assert row.prompt_tokens == expected_usage(body)["prompt_tokens"]
        assert orjson.loads(row.response)["id"] == row.remote_id
    expected_total = sum(expected_usage(b)["total_tokens"] for b in bodies)
    expected_reasoning = sum(
        expected_usage(b)["completion_tokens_details"]["reasoning_tokens"] for b in bodies
    )
    assert summary["usage"]["total_tokens"] == expected_total
    assert summary["usage"]["reasoning_tokens"] == expected_reasoning
    stats = sim.stats()
    assert stats["accepted"] == 60 and stats["duplicate_fingerprints"] == []
    assert summary["possible_duplicates"] == 0


def test_concurrent_claims_never_overlap(pg, tmp_path) -> None:
    write_requests(tmp_path / "in.jsonl", 200)
    load(pg, tmp_path / "in.jsonl")
    claimed: list[list[int]] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        with pg.begin() as conn:
            now = db_now(conn)
            got = queries.claim_for_submit(conn, now=now, limit=80, lease_seconds=30)
            time.sleep(0.2)  # hold the locks while the others claim
        claimed.append([c.id for c in got])

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for batch in claimed for i in batch]
    assert len(ids) == len(set(ids)) == 200


def test_lost_submission_is_resubmitted_and_counted(pg, engine, sim, tmp_path) -> None:
    write_requests(tmp_path / "in.jsonl", 10)
    batch_id = load(pg, tmp_path / "in.jsonl")
    with pg.begin() as conn:  # a worker reserves six rows, starts three POSTs, and dies
        now = db_now(conn)
        claims = queries.claim_for_submit(conn, now=now, limit=6, lease_seconds=30)
        for claim in claims[:3]:
            assert queries.mark_submitting(conn, claim, now=now, lease_seconds=30) == 1
        conn.execute(
            update(r)
            .where(r.c.id.in_([c.id for c in claims]))
            .values(due_at=now - timedelta(seconds=1))
        )
    summary = run_to_end(engine, pg, batch_id)
    assert summary["counts"]["succeeded"] == 10
    assert summary["possible_duplicates"] == 3  # only what was in flight


def test_stale_worker_changes_nothing(pg, tmp_path) -> None:
    write_requests(tmp_path / "in.jsonl", 1)
    load(pg, tmp_path / "in.jsonl")
    with pg.begin() as conn:
        now = db_now(conn)
        (claim,) = queries.claim_for_submit(conn, now=now, limit=1, lease_seconds=30)
        queries.mark_submitting(conn, claim, now=now, lease_seconds=30)
    with pg.begin() as conn:  # the lease runs out and another worker takes the row over
        conn.execute(update(r).values(due_at=now - timedelta(seconds=5)))
        assert queries.recover_expired_leases(conn, now=now, policy=build_policy()) == 1
    stale = Transition(RequestStatus.FAILED, now, {"error_code": "stale"})
    with pg.begin() as conn:
        applied = queries.apply_transition(
            conn,
            claim.id,
            batch_id=claim.batch_id,
            expected=RequestStatus.SUBMITTING,
            lease_token=claim.lease_token,
            transition=stale,
        )
        assert not applied
        row = conn.execute(select(r.c.status, r.c.error_code)).one()
    assert tuple(row) == ("queued", None)


def build_policy():
    from chatbatch.states import Policy

    return Policy.from_settings(get_settings())


@pytest.mark.parametrize("status", [401, 402])
def test_account_errors_pause_the_batch_until_resumed(
    pg, sim, tmp_path, monkeypatch, status
) -> None:
    write_requests(tmp_path / "in.jsonl", 20)
    batch_id = load(pg, tmp_path / "in.jsonl")
    sim.reconfigure(payment_required_keys=("sk-broke",))
    monkeypatch.setenv("CHATBATCH_API_KEY", "sk-broke" if status == 402 else "sk-wrong")
    get_settings.cache_clear()
    summary = run_with_current_settings(pg, batch_id)
    assert summary["status"] == "paused"
    assert str(status) in summary["pause_reason"]
    assert summary["counts"]["queued"] == 20
    assert sim.stats()["accepted"] == 0
    monkeypatch.setenv("CHATBATCH_API_KEY", "sk-sim")
    get_settings.cache_clear()
    with pg.begin() as conn:
        queries.set_batch_status(conn, batch_id, "running", from_statuses=["paused"])
    summary = run_with_current_settings(pg, batch_id)
    assert summary["counts"]["succeeded"] == 20
    assert max(row.attempts for row in rows(pg, batch_id)) == 1


def test_provider_failures_are_terminal_with_reason(pg, engine, sim, tmp_path) -> None:
    sim.reconfigure(fail_rate=1.0)
    write_requests(tmp_path / "in.jsonl", 5)
    batch_id = load(pg, tmp_path / "in.jsonl")
    summary = run_to_end(engine, pg, batch_id)
    assert summary["counts"]["failed"] == 5
    assert all(row.error_message for row in rows(pg, batch_id))


def test_transient_errors_retry_without_duplicates(pg, sim, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CHATBATCH_MAX_ATTEMPTS", "30")  # this test is about retries, not the cap
    get_settings.cache_clear()
    sim.reconfigure(
        rate_429=0.3,
        rate_503=0.2,
        retry_after=0.1,
        unknown_status_rate=0.3,
        blank_lines=3,
        not_found_seconds=0.2,
    )
    write_requests(tmp_path / "in.jsonl", 40)
    batch_id = load(pg, tmp_path / "in.jsonl")
    summary = run_with_current_settings(pg, batch_id)
    assert summary["counts"]["succeeded"] == 40
    stats = sim.stats()
    assert stats["accepted"] == 40 and stats["duplicate_fingerprints"] == []


def test_nul_in_a_result_is_stored_and_exported_intact(pg, engine, sim, tmp_path) -> None:
    from chatbatch.export import export_batch

    sim.reconfigure(nul_rate=1.0)
    write_requests(tmp_path / "in.jsonl", 3)
    batch_id = load(pg, tmp_path / "in.jsonl")
    assert run_to_end(engine, pg, batch_id)["counts"]["succeeded"] == 3
    out = tmp_path / "out.jsonl"
    with out.open("wb") as fh, pg.connect() as conn:
        export_batch(conn, batch_id, fh, "jsonl")
    for line in out.read_bytes().splitlines():
        content = orjson.loads(line)["response"]["body"]["choices"][0]["message"]["content"]
        assert "\x00" in content


def test_results_not_fetched_in_time_expire(pg, sim, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CHATBATCH_RESULT_RETENTION_SECONDS", "1")
    monkeypatch.setenv("CHATBATCH_EXPIRY_MARGIN_SECONDS", "0.5")
    get_settings.cache_clear()
    sim.reconfigure(latency="5")
    write_requests(tmp_path / "in.jsonl", 3)
    batch_id = load(pg, tmp_path / "in.jsonl")
    summary = run_with_current_settings(pg, batch_id, timeout=20)
    assert summary["counts"]["expired"] == 3
    assert all(row.error_code == "expired" for row in rows(pg, batch_id))


def test_a_reservation_taken_over_is_not_submitted(pg, tmp_path) -> None:
    write_requests(tmp_path / "in.jsonl", 1)
    load(pg, tmp_path / "in.jsonl")
    with pg.begin() as conn:
        now = db_now(conn)
        (slow,) = queries.claim_for_submit(conn, now=now, limit=1, lease_seconds=30)
    later = now + timedelta(seconds=31)  # the slow worker's reservation lapses; another claims
    with pg.begin() as conn:
        (fast,) = queries.claim_for_submit(conn, now=later, limit=1, lease_seconds=30)
        assert queries.mark_submitting(conn, slow, now=later, lease_seconds=30) is None
        assert queries.mark_submitting(conn, fast, now=later, lease_seconds=30) == 1
