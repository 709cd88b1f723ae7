"""Several hosts in one machine: two network namespaces run the workers, reaching PostgreSQL,
Redis and the simulator over their veth links (through a forwarder of the test's own in the
root namespace). One host is cut off mid-batch (its link down: its workers live on but reach
nothing) and healed later. The other host must take its work over once its heartbeats stop,
nothing it gave up on may reach the provider after the heal, its stale writes must change
nothing, and it must take new work within seconds of the heal."""

from __future__ import annotations

import subprocess
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from cli_process import BINARY
from faultkit import (
    STALE_WRITES,
    WORKER_CONCURRENCY,
    FaultRun,
    Worker,
    check_invariants,
    wait_until,
)
from netns import Forwarder, Host, Hosts

from simulator.answers import request_fingerprint

N = 300  # the batch the partition hits
N_AFTER = 200  # a second batch, loaded at the heal: new work for the healed host
WORKERS_ON_A = 2
PARTITION_SECONDS = 35.0  # at least; more than three missed heartbeats (3 x 5 s)
LEASE_SECONDS = 90.0  # far beyond the partition: the heartbeat must be what hands work over
HEARTBEAT_SECONDS = 5.0  # the default
NEW_WORK_TARGET_SECONDS = 10.0  # the healed host claims rows again within this


def _via(url: str, address: str) -> str:
    """``url`` with its 127.0.0.1 host replaced by ``address`` (the port stays)."""
    assert "127.0.0.1:" in url, url
    return url.replace("127.0.0.1:", f"{address}:", 1)


def _port(url: str) -> int:
    port = urlsplit(url.replace("postgresql+psycopg", "postgresql")).port
    assert port is not None, url
    return port


def _connect(run: FaultRun, hosts: Hosts, forwarder: Forwarder) -> dict[int, dict[str, str]]:
    """Relay PostgreSQL, Redis and the simulator to each host; the env each host's workers
    use (every address is its root-side peer)."""
    envs = {}
    names = ("CHATBATCH_DATABASE_URL", "CHATBATCH_BROKER_URL", "CHATBATCH_API_BASE")
    for host in hosts.hosts:
        for name in names:
            http = name == "CHATBATCH_API_BASE"
            label = f"{name}@{host.index}"
            forwarder.listen(label, host.root_address, _port(run.env[name]), http=http)
        envs[host.index] = {name: _via(run.env[name], host.root_address) for name in names}
    return envs


def _start_worker(run: FaultRun, host: Host, label: str, env: dict[str, str]) -> Worker:
    """``chatbatch worker`` inside ``host`` (``ip netns exec`` execs it: the pid is the
    worker's); stopped by the fixture, killed with the namespace at the latest."""
    assert BINARY
    log = run.tmp / f"{label}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            host.command(
                BINARY, "worker", "--concurrency", str(WORKER_CONCURRENCY), "--loglevel", "INFO"
            ),
            env=run.env | env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    worker = Worker(label, proc, log)
    run.workers.append(worker)
    return worker


def _worker_ids(run: FaultRun, workers: list[Worker]) -> list[str]:
    pids = [w.proc.pid for w in workers]
    return [row[0] for row in run.query("SELECT id FROM workers WHERE pid = ANY(%s)", pids)]


def _ids(rows: list[tuple[Any, ...]]) -> list[int]:
    return [row[0] for row in rows]


def _write_second_batch(run: FaultRun) -> tuple[str, list[dict[str, Any]]]:
    """Prompts unlike the first batch's (other fingerprints), as a JSONL file to load."""
    path = run.tmp / "after-heal.jsonl"
    bodies = []
    with path.open("wb") as out:
        for i in range(N_AFTER):
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"after the heal {i}"}],
            }
            bodies.append(body)
            line = {"custom_id": f"after-{i}", "method": "POST", "url": "/v1/chat/completions"}
            out.write(orjson.dumps(line | {"body": body}) + b"\n")
    return str(path), bodies


def _batch_rows(run: FaultRun, name: str) -> list[tuple[Any, ...]]:
    """Every column of a batch's request rows and of its batch row."""
    rows = run.query(
        "SELECT r.* FROM requests r JOIN batches b ON b.id = r.batch_id WHERE b.name = %s "
        "ORDER BY r.id",
        name,
    )
    return rows + run.query("SELECT * FROM batches WHERE name = %s", name)


def _stale_writes(workers: list[Worker]) -> int:
    return sum(int(n) for w in workers for n in STALE_WRITES.findall(w.text()))


@pytest.mark.hosts(2)
def test_a_partitioned_host_is_taken_over_and_heals_cleanly(
    fault_run: FaultRun, hosts: Hosts
) -> None:
    """Host A (two workers) is cut off with POSTs in flight; host B (one worker) takes its
    claims over by heartbeat (the lease is far longer) and finishes the batch. A second batch is
    loaded and A healed: A must claim some of it within seconds, nothing A gave up on may reach
    the provider, and the first batch must not change by one column."""
    run = fault_run
    run.env["CHATBATCH_LEASE_SECONDS"] = str(LEASE_SECONDS)
    run.env["CHATBATCH_HEARTBEAT_SECONDS"] = str(HEARTBEAT_SECONDS)
    run.sim.reconfigure(request_latency=0.3, latency="0.3")
    host_a, host_b = hosts.hosts
    with Forwarder() as forwarder:
        envs = _connect(run, hosts, forwarder)
        run.load(N)
        fingerprints = {request_fingerprint(body): f"id-{i}" for i, body in enumerate(run.bodies)}
        on_a = [_start_worker(run, host_a, f"a{i}", envs[0]) for i in range(WORKERS_ON_A)]
        _start_worker(run, host_b, "b0", envs[1])
        wait_until(
            lambda: len(_worker_ids(run, on_a)) == WORKERS_ON_A,
            "host A's workers to register",
            timeout=60,
        )
        a_ids = _worker_ids(run, on_a)

        def a_holds(status: str) -> list[int]:
            return _ids(
                run.query(
                    "SELECT id FROM requests WHERE status = %s AND worker_id = ANY(%s)",
                    status,
                    a_ids,
                )
            )

        wait_until(
            lambda: len(a_holds("submitting")) >= 4, "host A to have POSTs in flight", timeout=60
        )

        # --- the cut ---------------------------------------------------------------------
        hosts.partition(host_a)
        cut_at = time.monotonic()
        time.sleep(1.0)  # whatever A had sent before the cut has landed by now
        in_flight, polls = a_holds("submitting"), a_holds("submitted")
        assert in_flight, "host A had no POST in flight when it was cut off"
        in_flight_ids = {
            row[0]
            for row in run.query("SELECT custom_id FROM requests WHERE id = ANY(%s)", in_flight)
        }
        in_flight_fps = {fp for fp, cid in fingerprints.items() if cid in in_flight_ids}

        def taken_over() -> bool:
            """A's POSTs requeued (each counted), its polls released."""
            requeued = run.query(
                "SELECT count(*) FROM requests WHERE id = ANY(%s) AND ambiguous_submits > 0",
                in_flight,
            )[0][0]
            released = run.query(
                "SELECT count(*) FROM requests WHERE id = ANY(%s) "
                "AND (worker_id IS NULL OR NOT worker_id = ANY(%s))",
                polls,
                a_ids,
            )[0][0]
            return requeued == len(in_flight) and released == len(polls)

        wait_until(taken_over, "host B to take A's claims over", timeout=PARTITION_SECONDS)
        takeover_seconds = time.monotonic() - cut_at
        status = run.wait_finished(timeout=90)
        finished_seconds = time.monotonic() - cut_at
        time.sleep(max(0.0, PARTITION_SECONDS - (time.monotonic() - cut_at)))
        assert all(w.alive() for w in on_a), "a worker of the cut-off host died"
        check_invariants(run, status, max_possible_duplicates=len(in_flight))
        first_batch = _batch_rows(run, run.name)
        accepted_at_heal = dict(run.sim.stats()["accepted_by_fingerprint"])
        stale_at_heal = _stale_writes(on_a)

        # --- new work, and the heal ------------------------------------------------------
        path, after_bodies = _write_second_batch(run)
        run.cli("load", path, "--name", "after-heal")
        db_heal = run.query("SELECT clock_timestamp()")[0][0]
        hosts.heal(host_a)
        healed_at = time.monotonic()
        partition_seconds = healed_at - cut_at

        def a_claims_again() -> bool:
            rows = run.query(
                "SELECT count(*) FROM requests r JOIN batches b ON b.id = r.batch_id "
                "WHERE b.name = 'after-heal' AND r.worker_id = ANY(%s)",
                a_ids,
            )
            return rows[0][0] > 0

        def a_beats_again() -> bool:
            rows = run.query(
                "SELECT count(*) FROM workers WHERE id = ANY(%s) AND beat_at > %s", a_ids, db_heal
            )
            return rows[0][0] == len(a_ids)

        new_work_seconds: float | None = None
        beat_seconds: float | None = None
        deadline = healed_at + 60
        while time.monotonic() < deadline and (new_work_seconds is None or beat_seconds is None):
            if beat_seconds is None and a_beats_again():
                beat_seconds = time.monotonic() - healed_at
            if new_work_seconds is None and a_claims_again():
                new_work_seconds = time.monotonic() - healed_at
            time.sleep(0.05)
        run.name = "after-heal"
        after_status = run.wait_finished(timeout=120)
        wait_until(
            lambda: all(w.tasks_finished() for w in on_a), "host A's tasks to end", timeout=30
        )
        time.sleep(1.0)  # a few more ticks: they must not change the first batch either
        first_batch_after = _batch_rows(run, "faults")
        stats = run.sim.stats()
        stale_after = _stale_writes(on_a)
        a_posts = [r for r in forwarder.requests if r.label.endswith("@0") and r.method == "POST"]
        b_posts = [r for r in forwarder.requests if r.label.endswith("@1") and r.method == "POST"]
        a_late_bytes = [
            (c.label, round(c.last_forwarded_at - healed_at, 1))
            for c in forwarder.connections
            if c.label.endswith("@0")
            and c.opened_at < cut_at
            and c.last_forwarded_at is not None
            and c.last_forwarded_at > healed_at
        ]

    # What host A gave up on never reaches the provider after the heal: no POST of the first
    # batch from A after the heal, none on a connection A opened before the cut, and no
    # fingerprint of the first batch accepted again.
    late_posts = [
        (
            round(r.at - healed_at, 2),
            fingerprints.get(_fingerprint(r.body)),
            r.connection_opened_at < cut_at,
        )
        for r in a_posts
        if r.at > healed_at
        and (r.connection_opened_at < cut_at or _fingerprint(r.body) in fingerprints)
    ]
    regrown = {
        fingerprints[fp]: (accepted_at_heal.get(fp, 0), n)
        for fp, n in stats["accepted_by_fingerprint"].items()
        if fp in fingerprints and n != accepted_at_heal.get(fp, 0)
    }
    after_fps = {request_fingerprint(body) for body in after_bodies}
    after_accepted = {
        fp: n for fp, n in stats["accepted_by_fingerprint"].items() if fp in after_fps
    }
    real_duplicates = sum(accepted_at_heal.get(fp, 0) - 1 for fp in fingerprints)
    after_duplicates = sum(n - 1 for n in after_accepted.values())
    print(
        f"\nhost A ({WORKERS_ON_A} workers) cut off for {partition_seconds:.1f} s with "
        f"{len(in_flight)} POSTs in flight and {len(polls)} polls claimed\n"
        f"taken over by host B {takeover_seconds:.1f} s after the cut (heartbeat "
        f"{HEARTBEAT_SECONDS:g} s x 3, lease {LEASE_SECONDS:g} s: the heartbeat acted); "
        f"first batch finished {finished_seconds:.1f} s after the cut\n"
        f"duplicates: real {real_duplicates}, possible_duplicates "
        f"{status['possible_duplicates']}, in flight on A at the cut {len(in_flight)}\n"
        f"after the heal: A beat again in "
        f"{'never' if beat_seconds is None else f'{beat_seconds:.1f} s'}, claimed new work in "
        f"{'never' if new_work_seconds is None else f'{new_work_seconds:.1f} s'}; "
        f"second batch: POSTs from A {sum(r.at > healed_at for r in a_posts)}, from B "
        f"{sum(r.at > healed_at for r in b_posts)}, real duplicates {after_duplicates}, "
        f"possible_duplicates "
        f"{after_status['possible_duplicates']}\n"
        f"late POSTs from A {late_posts}; bytes from A after the heal on connections opened "
        f"before the cut {a_late_bytes}; stale writes A logged {stale_at_heal} before / "
        f"{stale_after} after the heal"
    )

    first_duplicates = set(stats["duplicate_fingerprints"]) & set(fingerprints)
    assert first_duplicates <= in_flight_fps, sorted(fingerprints[fp] for fp in first_duplicates)
    assert late_posts == [], f"POSTs from host A reached the provider after the heal: {late_posts}"
    assert regrown == {}, f"first-batch requests accepted again after the heal: {regrown}"
    changed = [
        (old, new) for old, new in zip(first_batch, first_batch_after, strict=True) if old != new
    ]
    assert changed == [], f"host A's stale writes changed the finished batch: {changed[:3]}"
    recovered = run.query(
        "SELECT status, ambiguous_submits FROM requests WHERE id = ANY(%s)", in_flight
    )
    assert all(s == "succeeded" and a >= 1 for s, a in recovered), recovered
    assert after_status["status"] == "completed", after_status
    assert after_status["counts"].get("succeeded") == N_AFTER, after_status
    assert len(after_accepted) == N_AFTER, "some of the second batch never reached the provider"
    assert after_duplicates == 0 and after_status["possible_duplicates"] == 0, (
        f"the second batch, loaded at the heal, was resubmitted: {after_duplicates} real "
        f"duplicates, {after_status['possible_duplicates']} possible; host A logged "
        f"{stale_after - stale_at_heal} stale writes after the heal"
    )
    assert all(w.alive() for w in on_a), "a worker of the healed host died"
    for worker in run.workers:
        assert run.secret not in worker.text(), f"API key in {worker.log}"
    assert beat_seconds is not None, "host A's workers never beat again after the heal"
    assert new_work_seconds is not None, "host A never took new work after the heal"
    assert new_work_seconds <= NEW_WORK_TARGET_SECONDS, (
        f"host A took {new_work_seconds:.1f} s after the heal to take new work"
    )
    run.stop_workers()


def _fingerprint(body: bytes) -> str:
    """The simulator's fingerprint of a forwarded request body."""
    return request_fingerprint(orjson.loads(body))
