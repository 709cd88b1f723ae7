"""Workers that die or freeze mid-batch: SIGKILL while submitting, SIGKILL while polling, SIGSTOP
past the lease then SIGCONT, and SIGSTOP inside a transaction. Another worker must finish the
batch, and a worker that wakes up late must change nothing."""

from __future__ import annotations

import time
from typing import Any

import orjson
from faultkit import (
    STALE_WRITES,
    WORKER_CONCURRENCY,
    FaultRun,
    Worker,
    check_invariants,
    wait_until,
)

# The shortest lease the settings accept with these timeouts (connect + 2 x read + 5 s).
SHORT_LEASE = {
    "CHATBATCH_LEASE_SECONDS": "10.5",
    "CHATBATCH_CONNECT_TIMEOUT": "1",
    "CHATBATCH_READ_TIMEOUT": "2",
}


def _wait_for_posts_in_flight(run: FaultRun, pid: int | None = None) -> None:
    """Until at least 4 POSTs are in flight: any worker's, or those of the worker ``pid``
    (with two workers started, the ones in flight may all be the other's)."""

    def in_flight() -> bool:
        if pid is None:
            return run.counts().get("submitting", 0) >= 4
        held = run.query(
            "SELECT count(*) FROM requests r JOIN workers w ON w.id = r.worker_id "
            "WHERE r.status = 'submitting' AND w.pid = %s",
            pid,
        )
        return bool(held[0][0] >= 4)

    wait_until(in_flight, "the victim to have POSTs in flight", timeout=60, interval=0.02)


def _ids(rows: list[tuple[Any, ...]]) -> list[int]:
    return [row[0] for row in rows]


def test_worker_killed_while_submitting(fault_run: FaultRun) -> None:
    """SIGKILL a worker with POSTs in flight: once their lease runs out its ``submitting`` rows
    are resubmitted (and counted) by the other worker."""
    run = fault_run
    run.sim.reconfigure(request_latency=0.3, latency="0.3")
    run.load(300)
    victim = run.start_worker("victim")
    _wait_for_posts_in_flight(run)  # the victim works alone, so what it leaves is its own
    victim.kill()
    orphans = _ids(run.query("SELECT id FROM requests WHERE status = 'submitting'"))
    assert orphans, "the victim had no POST in flight when it died"
    run.sim.reconfigure(request_latency=0.05)
    run.start_worker("survivor")
    status = run.wait_finished(timeout=90)

    check_invariants(run, status, max_possible_duplicates=WORKER_CONCURRENCY)
    recovered = run.query(
        "SELECT status, ambiguous_submits FROM requests WHERE id = ANY(%s)", orphans
    )
    assert all(s == "succeeded" and a >= 1 for s, a in recovered), recovered
    assert status["possible_duplicates"] >= len(orphans)


LIVENESS_DEFAULTS = (
    "CHATBATCH_LEASE_SECONDS",
    "CHATBATCH_TICK_SECONDS",
    "CHATBATCH_CONNECT_TIMEOUT",
    "CHATBATCH_READ_TIMEOUT",
)
RESUME_TARGET_SECONDS = 30.0


def test_a_killed_workers_posts_resume_within_30_s_with_default_settings(
    fault_run: FaultRun,
) -> None:
    """SIGKILL a worker with POSTs in flight, with the default lease (300 s), tick and
    heartbeat: the survivor takes its rows over once three heartbeats are missed, well within
    30 s, and ``chatbatch workers`` shows the victim lost, the survivor live."""
    run = fault_run
    for name in LIVENESS_DEFAULTS:
        run.env.pop(name)
    run.sim.reconfigure(request_latency=0.3, latency="0.3")
    run.load(300)
    victim = run.start_worker("victim")
    run.start_worker("survivor")
    _wait_for_posts_in_flight(run, victim.proc.pid)
    victim.kill()
    killed_at = time.monotonic()
    orphans = _ids(
        run.query(
            "SELECT r.id FROM requests r JOIN workers w ON w.id = r.worker_id "
            "WHERE r.status = 'submitting' AND w.pid = %s",
            victim.proc.pid,
        )
    )
    assert orphans, "the victim had no POST in flight when it died"

    def resumed() -> bool:
        rows = run.query(
            "SELECT count(*) FROM requests WHERE id = ANY(%s) AND ambiguous_submits = 0", orphans
        )
        return rows[0][0] == 0

    wait_until(resumed, "the victim's POSTs to be taken over", timeout=RESUME_TARGET_SECONDS)
    took = time.monotonic() - killed_at
    workers = orjson.loads(run.cli("workers", "--json").stdout)
    states = {row["pid"]: row["state"] for row in workers}
    status = run.wait_finished(timeout=120)

    check_invariants(run, status, max_possible_duplicates=WORKER_CONCURRENCY)
    assert states[victim.proc.pid] == "lost" and "live" in states.values(), workers
    print(f"\n{len(orphans)} POSTs of the killed worker resumed {took:.1f} s after the kill")


def test_worker_killed_while_polling(fault_run: FaultRun) -> None:
    """SIGKILL one of two workers while every request is submitted and being polled: its poll
    claims come back after the lease, and no poll ever resubmits."""
    run = fault_run
    n = 300
    run.sim.reconfigure(request_latency=0.02, latency="4")
    run.load(n)
    victim = run.start_worker("victim")
    run.start_worker("survivor")

    def all_submitted() -> bool:
        counts = run.counts()
        return counts.get("queued", 0) + counts.get("submitting", 0) == 0

    wait_until(all_submitted, "every request to be submitted", timeout=60)
    run.sim.reconfigure(request_latency=0.3)  # slow polls: each worker is mid-chunk all the time
    wait_until(lambda: run.sim.stats()["gets"] >= n // 2, "polls to flow", timeout=30)
    assert run.counts().get("submitted", 0) >= n // 2, "most results came before the kill"
    victim.kill()
    run.sim.reconfigure(request_latency=0.02)
    status = run.wait_finished(timeout=90)

    check_invariants(run, status, max_possible_duplicates=0)
    assert run.sim.stats()["accepted"] == n


def _open_claims(run: FaultRun) -> tuple[list[int], list[int]]:
    """The rows a paused worker that ran alone still has claimed: POSTs in flight, and polls (a
    claimed poll's ``due_at`` is a lease, beyond any poll delay)."""
    in_flight = _ids(run.query("SELECT id FROM requests WHERE status = 'submitting'"))
    polls = _ids(
        run.query(
            "SELECT id FROM requests WHERE status = 'submitted' "
            "AND due_at > clock_timestamp() + interval '3 seconds'"
        )
    )
    return in_flight, polls


def _finish_without(run: FaultRun, victim: Worker) -> dict[str, Any]:
    """Start a survivor and let it finish the batch while ``victim`` stays paused; it cannot
    take the victim's claims over before their lease has run out."""
    run.sim.reconfigure(request_latency=0.05)
    run.start_worker("survivor")
    lease = float(run.env["CHATBATCH_LEASE_SECONDS"])
    try:
        return run.wait_finished(timeout=lease + 30)
    except AssertionError as exc:
        locked = run.locked_rows()
        raise AssertionError(f"{exc}\nrows still locked by the paused worker: {locked}") from None


def _wake_and_check_nothing_changes(
    run: FaultRun, victim: Worker, claims: tuple[list[int], list[int]]
) -> None:
    """SIGCONT ``victim``, wait until it has tried every write its claims lead to (each refused
    and logged), and check that no column of the finished batch changed."""
    in_flight, polls = claims
    before = run.snapshot()
    victim.resume()

    def flushed() -> bool:
        log = victim.text()
        return (
            sum(int(count) for count in STALE_WRITES.findall(log)) >= len(in_flight) + len(polls)
            and victim.tasks_finished()
        )

    wait_until(flushed, "the woken worker to try its stale writes", timeout=30, interval=0.1)
    time.sleep(1.0)  # a few more ticks of its scheduler, which must not change anything either
    after = run.snapshot()
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert changed == [], changed[:3]
    assert victim.alive()


def test_worker_paused_past_its_lease_changes_nothing_when_it_wakes(fault_run: FaultRun) -> None:
    """SIGSTOP a worker (between two transactions) with POSTs and polls in flight, let
    another worker finish the whole batch, then SIGCONT it: the lease token refuses every write
    it then attempts, so not one column of the finished batch changes."""
    run = fault_run
    run.env |= SHORT_LEASE
    run.sim.reconfigure(request_latency=0.3, latency="0.3")
    run.load(200)
    victim = run.start_worker("victim", loglevel="INFO")
    _wait_for_posts_in_flight(run)
    run.pause_between_transactions(victim)
    claims = _open_claims(run)  # only the victim has run: every open claim is its own
    assert claims[0], "the victim had no POST in flight when it was paused"
    _finish_without(run, victim)

    _wake_and_check_nothing_changes(run, victim, claims)
    assert STALE_WRITES.search(victim.text())
    check_invariants(run, run.status(), max_possible_duplicates=WORKER_CONCURRENCY)


def test_worker_frozen_inside_a_transaction_blocks_nobody(fault_run: FaultRun) -> None:
    """SIGSTOP a worker while it holds row locks in an open transaction (a GC pause, a frozen
    VM): PostgreSQL must end its session so that the other worker finishes the batch once the
    lease has run out, and the worker, when it wakes, must still change nothing."""
    run = fault_run
    run.env |= SHORT_LEASE
    run.sim.reconfigure(request_latency=0.3, latency="0.3")
    run.load(100)
    victim = run.start_worker("victim", loglevel="INFO")
    _wait_for_posts_in_flight(run)
    locked = run.pause_holding_row_locks(victim)
    claims = _open_claims(run)
    assert locked, "the victim held no row lock when it was paused"
    _finish_without(run, victim)

    _wake_and_check_nothing_changes(run, victim, claims)
    check_invariants(run, run.status(), max_possible_duplicates=WORKER_CONCURRENCY)
