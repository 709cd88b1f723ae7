"""The engine against real PostgreSQL and the simulator over real HTTP."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import orjson
import pytest
from engine_helpers import load, rows, run_to_end, run_with_current_settings, write_requests
from sqlalchemy import func, select, update

from chatbatch.operations import controls
from chatbatch.reporting.summary import batch_summary
from chatbatch.rules.states import RequestStatus, Transition
from chatbatch.settings import get_settings
from chatbatch.store import reads, sweeps
from chatbatch.store.claims import claim_for_submit
from chatbatch.store.db import db_now
from chatbatch.store.models import requests_table as r
from chatbatch.store.writes import apply_transition
from simulator.answers import expected_content, expected_usage
from worker.runtime import build_engine


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
            got = claim_for_submit(conn, now=now, limit=80, lease_seconds=30)
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
    with pg.begin() as conn:  # a worker claims three rows, starts their POSTs, and dies
        now = db_now(conn)
        claims = claim_for_submit(conn, now=now, limit=3, lease_seconds=30)
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
        (claim,) = claim_for_submit(conn, now=now, limit=1, lease_seconds=30)
    with pg.begin() as conn:  # the lease runs out and another worker takes the row over
        conn.execute(update(r).values(due_at=now - timedelta(seconds=5)))
        assert sweeps.recover_expired_leases(conn, now=now, policy=build_policy()) == 1
    stale = Transition(RequestStatus.FAILED, now, {"error_code": "stale"})
    with pg.begin() as conn:
        applied = apply_transition(
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
    from chatbatch.rules.states import Policy

    return Policy.from_settings(get_settings())


REFUSALS = {
    401: {"api_keys": ("sk-rotated",)},
    402: {"payment_required_keys": ("sk-simulator",)},
    403: {"forbidden_keys": ("sk-simulator",)},
}


@pytest.mark.parametrize("status", sorted(REFUSALS))
def test_account_errors_mid_batch_pause_it_until_resumed(
    pg, sim, tmp_path, monkeypatch, status
) -> None:
    """The provider starts refusing the key after ten submissions: the batch pauses with the
    reason instead of failing every request, and ``resume`` continues once the account is fixed."""
    write_requests(tmp_path / "in.jsonl", 40)
    batch_id = load(pg, tmp_path / "in.jsonl")
    monkeypatch.setenv("CHATBATCH_CHUNK_SIZE", "10")
    get_settings.cache_clear()
    first = build_engine(get_settings())
    try:
        assert first.step() == 10
    finally:
        first.close()
    sim.reconfigure(**REFUSALS[status])
    summary = run_with_current_settings(pg, batch_id)
    assert summary["status"] == "paused"
    assert str(status) in summary["pause_reason"]
    assert summary["counts"]["queued"] + summary["counts"]["submitted"] == 40
    assert sim.stats()["accepted"] == 10
    assert sim.stats()["rejected"][str(status)] >= 1

    sim.reconfigure(api_keys=("sk-simulator",), payment_required_keys=(), forbidden_keys=())
    with pg.begin() as conn:
        assert controls.resume(conn, batch_id).status == "running"
    summary = run_with_current_settings(pg, batch_id)
    assert summary["counts"]["succeeded"] == 40
    assert max(row.attempts for row in rows(pg, batch_id)) == 1
    assert sim.stats()["accepted"] == 40


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
    from chatbatch.reporting.export import export_batch

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


def test_a_worker_never_holds_more_submissions_than_its_concurrency(
    pg, sim, tmp_path, monkeypatch
) -> None:
    """Two task threads stepping at once, chunks of 64, concurrency 4: while the POSTs hang, at
    most 4 rows are ``submitting``, which bounds the possible duplicates a crash can leave."""
    monkeypatch.setenv("CHATBATCH_CONCURRENCY", "4")
    monkeypatch.setenv("CHATBATCH_CHUNK_SIZE", "64")
    get_settings.cache_clear()
    sim.reconfigure(request_latency=1.0)
    write_requests(tmp_path / "in.jsonl", 50)
    load(pg, tmp_path / "in.jsonl")
    worker = build_engine(get_settings())
    threads = [threading.Thread(target=worker.step) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        with pg.connect() as conn:
            holding = conn.execute(
                select(func.count()).where(r.c.status == RequestStatus.SUBMITTING)
            ).scalar_one()
        for thread in threads:
            thread.join()
    finally:
        worker.close()
    assert holding == 4
    assert sim.stats()["accepted"] == 4


def test_a_stopped_fleet_is_warned_about_then_its_results_expire(pg, sim, tmp_path, monkeypatch):
    """Workers submit and vanish. ``status`` warns once the deadline is near; when a worker
    comes back after the provider deleted the results, the requests end expired, saying why."""
    monkeypatch.setenv("CHATBATCH_RESULT_RETENTION_SECONDS", "3")
    monkeypatch.setenv("CHATBATCH_EXPIRY_MARGIN_SECONDS", "0")
    get_settings.cache_clear()
    sim.reconfigure(latency="0.2", retention_seconds=3.0)
    write_requests(tmp_path / "in.jsonl", 5)
    batch_id = load(pg, tmp_path / "in.jsonl")
    fleet = build_engine(get_settings())
    try:
        assert fleet.step() == 5
    finally:
        fleet.close()
    warning = timedelta(seconds=get_settings().expiry_warning_seconds)
    with pg.connect() as conn:
        early = batch_summary(conn, reads.resolve_batch(conn, batch_id), expiry_warning=warning)
    assert early["expiring"]["count"] == 0
    time.sleep(2.3)  # inside the last 2/7 of the 3 s window
    with pg.connect() as conn:
        late = batch_summary(conn, reads.resolve_batch(conn, batch_id), expiry_warning=warning)
    assert late["expiring"]["count"] == 5
    time.sleep(1.0)
    summary = run_with_current_settings(pg, batch_id, timeout=20)
    assert summary["counts"]["expired"] == 5 and summary["status"] == "completed"
    assert {row.error_message for row in rows(pg, batch_id)} == {
        "result was not fetched before the provider's retention window closed"
    }
    assert sim.stats()["completed_results_served"] == 0


def test_rows_the_rate_limiter_holds_back_are_never_claimed(pg, sim, tmp_path, monkeypatch) -> None:
    """At 60 requests a minute ten due rows cannot all go: the limiter is asked before anything
    is claimed, so what it grants within the chunk's wait is claimed and submitted, and the
    rest are never touched: no attempt spent, no lease, nothing a lost worker could leave
    ambiguous."""
    monkeypatch.setenv("CHATBATCH_RATE_LIMITS", "gpt-4o-mini=60")
    get_settings.cache_clear()
    write_requests(tmp_path / "in.jsonl", 10)
    batch_id = load(pg, tmp_path / "in.jsonl")
    worker = build_engine(get_settings())
    try:
        handled = worker.step()
    finally:
        worker.close()
    sent = [row for row in rows(pg, batch_id) if row.status == "submitted"]
    untouched = [row for row in rows(pg, batch_id) if row.status == "queued"]
    assert 1 <= handled == len(sent) <= 3 and len(sent) + len(untouched) == 10
    assert sim.stats()["accepted"] == len(sent) and sim.stats()["posts"] == len(sent)
    assert all(row.attempts == 0 and row.lease_token == 0 for row in untouched)
    assert all(row.ambiguous_submits == 0 for row in rows(pg, batch_id))
