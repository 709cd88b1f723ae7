"""Claims held up inside PostgreSQL. A claim whose snapshot is older than another worker's whole
claim, answer and write must not take a row that write scheduled for later (a 503's
Retry-After, a backoff): llmock caught a retry sent 0.02 s after a 503 asking for 1 s. And a
claim whose commit came back late (a partition healing) must not be sent: another worker may
have taken its rows over meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from engine_helpers import load, write_requests
from sqlalchemy import Connection, Engine, select, text, update

from chatbatch.rules.states import RequestStatus
from chatbatch.settings import get_settings
from chatbatch.store import claims
from chatbatch.store.db import db_now
from chatbatch.store.models import requests_table as r
from worker.providers import send_window
from worker.runtime import build_engine

LATER = "interval '1 millisecond'"
GATE = 731_904  # an advisory lock the test holds while a claim is stalled on it
# A row trigger that holds a claim's UPDATE on its first row until the test opens the gate: the
# claim then locks its other rows only after the test has moved one of them on, as a slow one
# would.
STALL = """
CREATE FUNCTION test_stall_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.id = {first} AND NEW.status = 'submitting' THEN
    PERFORM pg_advisory_lock({gate}); PERFORM pg_advisory_unlock({gate});
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER test_stall_claim BEFORE UPDATE ON requests
  FOR EACH ROW EXECUTE FUNCTION test_stall_claim();
"""
UNSTALL = """
DROP TRIGGER IF EXISTS test_stall_claim ON requests;
DROP FUNCTION IF EXISTS test_stall_claim();
"""


@pytest.fixture
def gate(pg: Engine) -> Iterator[Connection]:
    """A session holding the gate's advisory lock; closing it opens the gate."""
    with pg.connect() as holder:
        holder.execute(text(f"SELECT pg_advisory_lock({GATE})"))
        yield holder


@pytest.fixture
def stalled_first_row(pg: Engine, tmp_path) -> Iterator[tuple[int, int]]:
    """A batch of two rows whose first row stalls a claim at the gate; the ids of both."""
    write_requests(tmp_path / "in.jsonl", 2)
    batch_id = load(pg, tmp_path / "in.jsonl")
    with pg.connect() as conn:
        first, second = conn.execute(
            select(r.c.id).where(r.c.batch_id == batch_id).order_by(r.c.id)
        ).scalars()
    with pg.begin() as conn:  # the first row is due (and claimed) first
        conn.execute(text(f"UPDATE requests SET due_at = due_at + {LATER} WHERE id = {second}"))
        conn.execute(text(STALL.format(first=first, gate=GATE)))
    try:
        yield first, second
    finally:
        with pg.begin() as conn:
            conn.execute(text(UNSTALL))


def _wait_at_gate(pg: Engine) -> None:
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory' "
        "AND datname = current_database()"
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with pg.connect() as conn:
            if conn.execute(query).scalar_one():
                return
        time.sleep(0.05)
    raise AssertionError("the claim never reached its first row")


def test_a_slow_claim_leaves_a_row_another_worker_scheduled_for_later(
    pg: Engine, gate: Connection, stalled_first_row: tuple[int, int]
) -> None:
    first, second = stalled_first_row
    taken: list[int] = []

    def slow_claim() -> None:
        with pg.begin() as conn:
            now = db_now(conn)
            found = claims.claim_for_submit(conn, now=now, limit=2, lease_seconds=300)
            taken.extend(claim.id for claim in found)

    claimer = threading.Thread(target=slow_claim)
    claimer.start()
    try:
        _wait_at_gate(pg)
        # Meanwhile another worker claims the second row, gets a 503 asking for a minute and
        # writes it back queued, due then: all committed before the slow claim locks it.
        with pg.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))  # fail, never hang
            later = db_now(conn) + timedelta(seconds=60)
            conn.execute(update(r).where(r.c.id == second).values(status="submitting"))
        with pg.begin() as conn:
            conn.execute(update(r).where(r.c.id == second).values(status="queued", due_at=later))
    finally:
        gate.execute(text(f"SELECT pg_advisory_unlock({GATE})"))
        claimer.join(timeout=30)
    assert not claimer.is_alive()
    assert taken == [first], "the slow claim took a row before its due time"
    with pg.connect() as conn:
        row = conn.execute(select(r.c.status, r.c.due_at).where(r.c.id == second)).one()
    assert (row.status, row.due_at) == (RequestStatus.QUEUED, later)


def test_a_claim_whose_commit_came_back_too_late_is_not_sent(
    pg: Engine, sim, gate: Connection, stalled_first_row: tuple[int, int], monkeypatch
) -> None:
    """Heartbeats of 1 s: another worker may take a claim over 2 s after it began, so its
    POSTs must begin within 0.67 s. This claim's commit comes back after 1.5 s."""
    monkeypatch.setenv("CHATBATCH_HEARTBEAT_SECONDS", "1")
    get_settings.cache_clear()
    assert round(send_window(get_settings()), 2) == 0.67
    engine = build_engine(get_settings())
    try:
        stepper = threading.Thread(target=engine.step)
        stepper.start()
        try:
            _wait_at_gate(pg)
            time.sleep(1.5)
        finally:
            gate.execute(text(f"SELECT pg_advisory_unlock({GATE})"))
            stepper.join(timeout=30)
        with pg.connect() as conn:
            held_up = conn.execute(select(r.c.status, r.c.attempts, r.c.ambiguous_submits)).all()
        assert sim.stats()["accepted"] == 0, "a POST went out for a claim that was too old"
        assert sorted(held_up) == [(RequestStatus.QUEUED, 0, 0)] * 2  # back, nothing counted

        with pg.begin() as conn:  # the same claim, not held up: sent
            conn.execute(text(UNSTALL))
        engine.step()
        assert sim.stats()["accepted"] == 2
    finally:
        engine.close()
