"""A fleet on one PostgreSQL: running batches share each claim by priority, and the rows a worker
holds are taken over as soon as its heartbeat stops, by any other worker's housekeeping."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest
from engine_helpers import load, write_requests
from sqlalchemy import Engine, select, update

from chatbatch.rules.states import Policy, RequestStatus, Transition
from chatbatch.settings import get_settings
from chatbatch.store import claims, liveness, sweeps
from chatbatch.store.db import db_now
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import requests_table as r
from chatbatch.store.models import workers_table as w
from chatbatch.store.writes import apply_transition

HEARTBEAT = 5.0


def _batches(pg: Engine, tmp_path, sizes: dict[str, int]) -> dict[str, str]:
    """Load one batch per name, in order, of the given sizes; their ids by name."""
    ids = {}
    for name, size in sizes.items():
        write_requests(tmp_path / f"{name}.jsonl", size)
        ids[name] = load(pg, tmp_path / f"{name}.jsonl")
    return ids


def _set_priority(pg: Engine, batch_id: str, priority: int) -> None:
    with pg.begin() as conn:
        conn.execute(update(b).where(b.c.id == batch_id).values(priority=priority))


def _claim(pg: Engine, limit: int, worker_id: str | None = None) -> list[claims.SubmitClaim]:
    with pg.begin() as conn:
        return claims.claim_for_submit(
            conn, now=db_now(conn), limit=limit, lease_seconds=300, worker_id=worker_id
        )


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """The claims' random starts (``rules.fair_share``) drawn the same way every run."""
    random.seed(7)


def test_a_small_batch_loaded_behind_a_large_one_shares_every_claim(pg, tmp_path) -> None:
    ids = _batches(pg, tmp_path, {"nightly": 300, "adhoc": 30})
    taken = Counter(claim.batch_id for _ in range(3) for claim in _claim(pg, 10))
    # Equal weights: each claim of 10 splits about 5/5. The batches' random starts differ by
    # Exp(1) rows, so one claim can go 7/3 (CI once drew 11 of 30 for "adhoc", unseeded).
    assert 12 <= taken[ids["adhoc"]] <= 18, taken
    assert sum(taken.values()) == 30


def test_priority_buys_a_larger_share_but_never_all(pg, tmp_path) -> None:
    ids = _batches(pg, tmp_path, {"low": 200, "high": 200})
    _set_priority(pg, ids["high"], 3)  # weight 4 against 1
    taken = Counter(claim.batch_id for _ in range(10) for claim in _claim(pg, 10))
    # A fifth of 100 ideally; in claims of 10 rows the random start costs "low" about a row
    # in every two claims (rules.fair_share), so about 16.
    assert 8 <= taken[ids["low"]] <= 26, taken
    assert taken[ids["high"]] + taken[ids["low"]] == 100


def test_one_row_claims_are_shared_in_proportion_to_weight(pg, tmp_path) -> None:
    """Claims of a single row cannot be split: each goes to a batch with probability
    w / sum(w), so a higher priority does not take every one."""
    ids = _batches(pg, tmp_path, {"low": 400, "high": 400})
    _set_priority(pg, ids["high"], 2)  # weight 3 against 1: a quarter for "low"
    taken = Counter(claim.batch_id for _ in range(400) for claim in _claim(pg, 1))
    assert sum(taken.values()) == 400
    assert 0.17 <= taken[ids["low"]] / 400 <= 0.33, taken


def test_a_claim_takes_what_is_due_when_its_fair_pick_is_locked(pg, tmp_path) -> None:
    """Another claim holding the rows this one picked fairly does not leave it empty-handed."""
    _batches(pg, tmp_path, {"only": 50})
    with pg.begin() as holder:
        first = claims.claim_for_submit(holder, now=db_now(holder), limit=20, lease_seconds=300)
        second = _claim(pg, 20)  # its fair candidates (40 rows) include the 20 held
    assert len(first) == len(second) == 20
    assert not {c.id for c in first} & {c.id for c in second}


def test_paused_batches_and_cost_caps_keep_their_rows(pg, tmp_path) -> None:
    ids = _batches(pg, tmp_path, {"paused": 50, "capped": 50, "free": 50})
    with pg.begin() as conn:
        conn.execute(update(b).where(b.c.id == ids["paused"]).values(status="paused"))
        got = claims.claim_for_submit(
            conn, now=db_now(conn), limit=30, lease_seconds=300, capped={ids["capped"]: 4}
        )
    taken = Counter(claim.batch_id for claim in got)
    assert taken == {ids["capped"]: 4, ids["free"]: 26}


def _register(pg: Engine, *, beat_ago: float) -> str:
    worker_id = f"w{random.randrange(1 << 40):x}"
    with pg.begin() as conn:
        now = db_now(conn)
        liveness.register(conn, worker_id, host="h", pid=1, kind="worker", now=now)
        conn.execute(
            update(w).where(w.c.id == worker_id).values(beat_at=now - timedelta(seconds=beat_ago))
        )
    return worker_id


def _sweep(pg: Engine) -> tuple[int, int]:
    policy = Policy.from_settings(get_settings())
    with pg.begin() as conn:
        now = db_now(conn)
        requeued = sweeps.recover_expired_leases(
            conn, now=now, policy=policy, heartbeat_seconds=HEARTBEAT
        )
        released = sweeps.release_lost_polls(conn, now=now, heartbeat_seconds=HEARTBEAT)
    return requeued, released


def _statuses(pg: Engine, ids: list[int]) -> list[tuple]:
    with pg.connect() as conn:
        query = select(r.c.status, r.c.ambiguous_submits, r.c.worker_id).where(r.c.id.in_(ids))
        return sorted(tuple(row) for row in conn.execute(query))


def test_a_lost_workers_submissions_are_requeued_at_once_and_counted(pg, tmp_path) -> None:
    _batches(pg, tmp_path, {"b": 30})
    live = _register(pg, beat_ago=1)
    lost = _register(pg, beat_ago=HEARTBEAT * 3 + 1)  # three beats missed
    kept = [c.id for c in _claim(pg, 10, worker_id=live)]
    orphans = _claim(pg, 10, worker_id=lost)
    assert _sweep(pg) == (10, 0)  # the lease (300 s) is far from over
    assert _statuses(pg, [c.id for c in orphans]) == [("queued", 1, None)] * 10
    assert _statuses(pg, kept) == [("submitting", 0, live)] * 10
    # The lost worker comes back and writes what its POSTs got: its claims are gone.
    with pg.begin() as conn:
        accepted = Transition(RequestStatus.SUBMITTED, db_now(conn), {"remote_id": "late"})
        stale = [
            apply_transition(
                conn,
                claim.id,
                batch_id=claim.batch_id,
                expected=RequestStatus.SUBMITTING,
                lease_token=claim.lease_token,
                transition=accepted,
            )
            for claim in orphans
        ]
    assert stale == [False] * 10
    assert _statuses(pg, [c.id for c in orphans]) == [("queued", 1, None)] * 10


def test_a_lost_workers_polls_fall_due_and_a_stopped_worker_counts_as_lost(pg, tmp_path) -> None:
    _batches(pg, tmp_path, {"b": 20})
    gone = _register(pg, beat_ago=0)
    with pg.begin() as conn:
        now = db_now(conn)
        conn.execute(update(r).values(status="submitted", remote_id="t", due_at=now))
        polls = claims.claim_for_poll(conn, now=now, limit=20, lease_seconds=300, worker_id=gone)
        liveness.mark_stopped(conn, gone, now=now)
    assert len(polls) == 20
    assert _sweep(pg) == (0, 20)
    with pg.connect() as conn:
        due = conn.execute(select(r.c.due_at <= db_now(conn), r.c.worker_id)).all()
    assert set(due) == {(True, None)}


def test_workers_are_listed_with_their_state_and_what_they_hold(pg, tmp_path) -> None:
    _batches(pg, tmp_path, {"b": 10})
    live = _register(pg, beat_ago=1)
    lost = _register(pg, beat_ago=60)
    _claim(pg, 4, worker_id=live)
    with pg.connect() as conn:
        now = db_now(conn)
        listed = liveness.list_workers(
            conn, now=now, heartbeat_seconds=HEARTBEAT, since=now - timedelta(hours=1)
        )
    states = {row.id: (row.state, row.in_flight) for row in listed}
    assert states == {live: ("live", 4), lost: ("lost", 0)}
