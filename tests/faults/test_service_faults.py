"""Redis and PostgreSQL failing under two running workers: every message flushed, Redis
restarted, PostgreSQL restarted. PostgreSQL holds every fact, so each may only cost latency."""

from __future__ import annotations

from faultkit import (
    WORKER_CONCURRENCY,
    FaultRun,
    PrivatePostgres,
    PrivateRedis,
    check_invariants,
    wait_until,
)

N = 300
# Short drain tasks, so that finishing the batch after a fault takes messages sent after it.
SHORT_TASKS = {"CHATBATCH_TASK_BUDGET_SECONDS": "1"}


def _two_workers_mid_batch(run: FaultRun) -> None:
    """Load a batch, start two workers, and wait until a third of it has been accepted."""
    run.env |= SHORT_TASKS
    run.sim.reconfigure(request_latency=0.05, latency="0.5")
    run.load(N)
    run.start_worker("worker-a")
    run.start_worker("worker-b")
    wait_until(lambda: run.sim.stats()["accepted"] >= N // 3, "a third of the batch", timeout=60)


def _assert_mid_batch(run: FaultRun) -> None:
    counts = run.counts()
    assert counts.get("succeeded", 0) < N, f"the batch was over before the fault: {counts}"


def test_redis_flushed_mid_batch(fault_run: FaultRun, private_redis: PrivateRedis) -> None:
    """FLUSHALL loses every queued and unacknowledged "go look" message (and kombu's bindings):
    the schedulers' next ticks find the due rows in PostgreSQL and send new ones."""
    run = fault_run
    queue = run.env["CHATBATCH_QUEUE"]
    _two_workers_mid_batch(run)
    wait_until(lambda: private_redis.queue_length(queue) > 0, "messages to be queued", timeout=30)
    sent_before = run.received_tasks()
    private_redis.flushall()
    _assert_mid_batch(run)
    status = run.wait_finished(timeout=60)

    assert run.received_tasks() - sent_before, "no message was sent after the flush"
    assert all(w.alive() for w in run.workers), run.logs()
    check_invariants(run, status, max_possible_duplicates=0)


def test_redis_restarted_mid_batch(fault_run: FaultRun, private_redis: PrivateRedis) -> None:
    """Redis down for a few seconds, and empty when it is back: the workers reconnect rather than
    exit, and finish the batch on messages sent after the restart."""
    run = fault_run
    _two_workers_mid_batch(run)
    sent_before = run.received_tasks()
    private_redis.restart(down_seconds=3)
    _assert_mid_batch(run)
    status = run.wait_finished(timeout=90)

    assert all(w.alive() for w in run.workers), run.logs()
    for worker in run.workers:
        assert worker.text().count("Connected to redis") >= 2, f"{worker.label} never reconnected"
    assert run.received_tasks() - sent_before, "no message was sent after the restart"
    check_invariants(run, status, max_possible_duplicates=0)


def test_postgres_restarted_mid_batch(
    fault_run: FaultRun, private_postgres: PrivatePostgres
) -> None:
    """PostgreSQL down for a few seconds: every pooled connection breaks, writes are retried
    through the outage, and claims and ticks resume once it is back."""
    run = fault_run
    _two_workers_mid_batch(run)
    private_postgres.restart(down_seconds=3)
    _assert_mid_batch(run)
    status = run.wait_finished(timeout=90)

    assert all(w.alive() for w in run.workers), run.logs()
    check_invariants(run, status, max_possible_duplicates=2 * WORKER_CONCURRENCY)
