"""A fleet through the installed binary: a small batch loaded behind a large one shares the
provider's rate at once, ``chatbatch workers`` lists the fleet, and a worker refuses a database
of its own."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pytest
from cli_process import (
    BINARY,
    base_env,
    chatbatch,
    query_rows,
    start_worker,
    stop,
    work_with_workers,
    write_prompts,
)
from hook_receiver import receiving

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)

LIMIT_PER_SECOND = 20


def _finish_time(env: dict[str, str], name: str, timeout: float) -> float:
    """Seconds from now until batch ``name`` is no longer running."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        status = orjson.loads(chatbatch("status", name, "--json", env=env).stdout)
        if status["status"] != "running":
            assert status["status"] == "completed", status
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{name} not finished in {timeout} s")


def _load(env: dict[str, str], tmp: Path, name: str, n: int) -> None:
    write_prompts(tmp / f"{name}.jsonl", n)
    chatbatch("load", str(tmp / f"{name}.jsonl"), "--name", name, env=env)


def test_a_small_batch_behind_a_large_one_finishes_about_as_fast_as_alone(
    distributed_env, sim, tmp_path
) -> None:
    """The issue's scenario: 40 requests loaded behind 3,000 on a 20 requests/s limit. With
    first come, first served they waited 150 s for the large batch; sharing each claim, they
    take a few seconds more than alone, and the provider's rate stays used."""
    env = distributed_env | {"CHATBATCH_RATE_LIMITS": f"gpt-4o-mini={LIMIT_PER_SECOND * 60}"}
    chatbatch("db", "upgrade", env=env)
    workers = [start_worker(env, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        _load(env, tmp_path, "alone", 40)
        alone = _finish_time(env, "alone", timeout=60)
        _load(env, tmp_path, "nightly", 3000)
        time.sleep(4)  # the large batch at full rate
        _load(env, tmp_path, "adhoc", 40)
        shared = _finish_time(env, "adhoc", timeout=60)
        fleet = orjson.loads(chatbatch("workers", "--json", env=env).stdout)
        chatbatch("cancel", "nightly", "--discard", env=env)
    finally:
        for proc in workers:
            stop(proc)
    rate = _submission_rate(env["CHATBATCH_DATABASE_URL"], "adhoc")
    print(f"\nalone {alone:.1f} s, behind 3,000 {shared:.1f} s, {rate:.1f} POSTs/s accepted")
    assert shared <= alone + 5, (alone, shared)
    # The limiter aims at the limit; a loaded 2-core CI machine measured 94.5% of it over this
    # few-second window. A claim that wasted grants would leave far more unused.
    assert rate >= 0.85 * LIMIT_PER_SECOND, rate
    live = [row for row in fleet if row["state"] == "live" and row["kind"] == "worker"]
    assert len(live) == 2, fleet


def _submission_rate(url: str, name: str) -> float:
    """Requests accepted per second, all batches together, while batch ``name`` was being
    submitted (the database's own timestamps)."""
    ((first, last),) = query_rows(
        url,
        "SELECT min(r.submitted_at), max(r.submitted_at) FROM requests r "
        f"JOIN batches b ON b.id = r.batch_id WHERE b.name = '{name}'",
    )
    ((count,),) = query_rows(
        url,
        "SELECT count(*) FROM requests WHERE submitted_at "
        f"BETWEEN '{first.isoformat()}' AND '{last.isoformat()}'",
    )
    return (count - 1) / (last - first).total_seconds()


def test_a_worker_refuses_a_sqlite_database_unless_told_it_is_a_test(tmp_path) -> None:
    env = base_env(tmp_path) | {
        "CHATBATCH_BROKER_URL": "redis://127.0.0.1:6379/0",
        "GEEKAI_API_KEY": "sk-test",
    }
    refused = chatbatch("worker", env=env, check=False, timeout=60)
    assert refused.returncode == 2, refused
    assert "database is SQLite" in refused.stderr and "--allow-sqlite" in refused.stderr
    assert "CHATBATCH_DATABASE_URL" in refused.stderr
    assert not (tmp_path / "chatbatch").exists() or not list((tmp_path / "chatbatch").iterdir())


def test_each_worker_keeps_within_its_connection_budget(distributed_env, sim, tmp_path) -> None:
    """Two sync-mode workers of 16 connections to the provider each (their recording threads
    all writing): PostgreSQL never sees more than CHATBATCH_DB_CONNECTIONS (4) from either."""
    sim.reconfigure(latency="lognormal:0.2,0.5")
    env = distributed_env | {"CHATBATCH_API_MODE": "sync", "CHATBATCH_CONCURRENCY": "16"}
    chatbatch("db", "upgrade", env=env)
    _load(env, tmp_path, "budget", 400)
    tagged = env | {"PGAPPNAME": "chatbatch-budget-test"}
    workers = [start_worker(tagged, tmp_path / f"w{i}.log") for i in range(2)]
    url = env["CHATBATCH_DATABASE_URL"]
    peak = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ((count,),) = query_rows(
                url,
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'chatbatch-budget-test'",
            )
            peak = max(peak, count)
            ((open_rows,),) = query_rows(
                url, "SELECT count(*) FROM requests WHERE status NOT IN ('succeeded', 'failed')"
            )
            if not open_rows:
                break
            time.sleep(0.1)
    finally:
        for proc in workers:
            stop(proc)
    print(f"\npeak PostgreSQL connections of two sync workers: {peak}")
    assert open_rows == 0
    assert 2 <= peak <= 2 * 4, peak


def test_a_batch_loaded_with_notify_is_announced_once_by_the_fleet(
    distributed_env, sim, tmp_path
) -> None:
    """``load --notify``: no shell waits for the batch, yet its end is POSTed, once, by
    whichever of the two workers saw it."""
    env = distributed_env
    chatbatch("db", "upgrade", env=env)
    write_prompts(tmp_path / "n.jsonl", 60)
    with receiving() as hook:
        chatbatch(
            "load", str(tmp_path / "n.jsonl"), "--name", "announced", "--notify", hook.url(),
            env=env,
        )  # fmt: skip
        status, logs = work_with_workers(env, "announced", tmp_path)
        deadline = time.monotonic() + 30
        while not hook.received and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # a second send, if any, would come within a tick or two
    assert status["status"] == "completed"
    (event,) = hook.bodies()
    assert event["event"] == "batch.finished" and event["exit_code"] == 0
    assert event["name"] == "announced" and event["counts"]["succeeded"] == 60
    assert "s3cret" not in logs
