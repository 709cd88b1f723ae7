"""The fault-injection kit: private Redis and PostgreSQL servers a test may flush, stop and
restart without disturbing the machine's shared ones, a batch driven through the installed
``chatbatch`` binary and its worker processes, and the invariants every fault must leave intact.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis
from cli_process import BINARY, chatbatch, database_dump, write_prompts

from chatbatch.rules.completions import USAGE_COLUMNS
from simulator.answers import expected_usage
from simulator.embedded import SimulatorHandle

ACTIVE = ("queued", "submitting", "submitted")
WORKER_CONCURRENCY = 8  # HTTP requests one worker process has in flight at most
START_TIMEOUT = 60.0
STALE_WRITES = re.compile(r"(\d+) stale write\(s\) ignored")  # logged by worker/recording.py


class ServiceError(RuntimeError):
    """A private server could not be set up, started or stopped."""


def wait_until(
    condition: Callable[[], bool], what: str, *, timeout: float, interval: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A free 127.0.0.1 port below the kernel's ephemeral range, so that no outgoing connection
    can be given it while a server is down for a restart."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    high = max(ephemeral_low, 12000)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(high - 10000, high)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise ServiceError("found no free port on 127.0.0.1")


def _tail(path: Path, lines: int = 20) -> str:
    """The last lines of a server log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


class PrivateRedis:
    """A ``redis-server`` of this test run's own, without persistence, on a free port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = workdir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        """Start the server (on the port it had before, if any) and wait until it answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not installed")
        for _ in range(3 if self.port == 0 else 1):
            port = self.port or free_port()
            self._proc = subprocess.Popen(
                [
                    binary,
                    *("--port", str(port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no"),
                    *("--dir", str(self.workdir), "--logfile", str(self._log)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.port = port
            if self._wait_ready():
                return
            self._reap()
        raise ServiceError(f"redis-server did not start on port {self.port}:\n{_tail(self._log)}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
            try:
                if client.ping():
                    return True
            except redis.RedisError:
                time.sleep(0.05)
            finally:
                client.close()
        return False

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Shut the server down (SIGTERM; no data is saved) and wait until it has exited."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
        self._reap()

    def _reap(self) -> None:
        if self._proc is None:
            return
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def restart(self, down_seconds: float) -> None:
        """Stop, stay down ``down_seconds`` (the outage itself), start again on the same port."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def queue_length(self, queue: str) -> int:
        client = self.client()
        try:
            return int(client.llen(queue))
        finally:
            client.close()

    def flushall(self) -> None:
        """Drop every key: all queued and unacknowledged messages, and kombu's bindings."""
        client = self.client()
        try:
            client.flushall()
        finally:
            client.close()


class PrivatePostgres:
    """A PostgreSQL cluster of this test run's own (initdb in a temp dir, trust auth, TCP on
    127.0.0.1 and a unix socket in the temp dir); as root, its binaries run as ``postgres``."""

    def __init__(self, root: Path) -> None:
        bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bindirs:
            raise ServiceError("no /usr/lib/postgresql/*/bin/initdb")
        self.bindir = bindirs[-1].parent
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = 0
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(root, "postgres", "postgres")
        root.chmod(0o700)

    def _pg(self, tool: str, *args: str, timeout: float = 120) -> str:
        """Run one PostgreSQL binary (as ``postgres`` when we are root); returns its stdout."""
        command = [str(self.bindir / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        proc = subprocess.run(
            command,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise ServiceError(
                f"{tool} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}\n"
                f"{_tail(self.log)}"
            )
        return proc.stdout

    def init(self) -> None:
        self._pg(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )

    def start(self) -> None:
        """Start the cluster (on the port it had before, if any) and wait until it accepts."""
        attempts = 3 if self.port == 0 else 1
        for attempt in range(attempts):
            port = self.port or free_port()
            options = (
                f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._pg(
                    "pg_ctl",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(int(START_TIMEOUT)),
                    "start",
                )
            except ServiceError:
                if attempt == attempts - 1:
                    raise
                continue
            self.port = port
            return

    def running(self) -> bool:
        try:
            self._pg("pg_ctl", "-D", str(self.data), "status")
        except ServiceError:
            return False
        return True

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster; ``fast`` disconnects every session, as a restart does."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, down_seconds: float) -> None:
        """Stop, stay down ``down_seconds`` (the outage itself), start again on the same port."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def dsn(self, database: str) -> str:
        """A libpq/psycopg URL (prefix ``postgresql+psycopg`` for chatbatch's settings)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def dump(self, database: str) -> str:
        """Every row of every table, as ``pg_dump --data-only`` prints them."""
        return self._pg(
            "pg_dump", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-a", database
        )

    def destroy(self) -> None:
        """Stop the cluster if it runs and remove its directory."""
        if self.data.exists():
            with contextlib.suppress(ServiceError):
                self.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Worker:
    """One ``chatbatch worker`` process and its log."""

    label: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tasks_finished(self) -> bool:
        """Whether every ``drain`` task this worker received has ended (needs an INFO log)."""
        received, finished = drain_tasks(self.text())
        return received <= finished

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when a machine dies."""
        self.proc.kill()
        self.proc.wait()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM) of a running or paused worker; SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()


@dataclass
class FaultRun:
    """One batch on a private database, its workers, and everything the CLI printed."""

    env: dict[str, str]
    dsn: str
    database: str
    postgres: PrivatePostgres
    sim: SimulatorHandle
    tmp: Path
    name: str = "faults"
    bodies: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)

    @property
    def secret(self) -> str:
        return self.env["GEEKAI_API_KEY"]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``chatbatch ARGS`` in this run's environment, keeping its output for the checks."""
        proc = chatbatch(*args, env=self.env, check=check)
        self.outputs.append(proc.stdout + proc.stderr)
        return proc

    def load(self, n: int) -> None:
        path = self.tmp / "prompts.jsonl"
        self.bodies = write_prompts(path, n)
        self.cli("load", str(path), "--name", self.name)

    def start_worker(
        self, label: str, *, loglevel: str = "INFO", env: dict[str, str] | None = None
    ) -> Worker:
        """Start ``chatbatch worker --concurrency 8``; it is stopped when the test ends."""
        assert BINARY, "the chatbatch binary must be installed (pip install -e .)"
        log = self.tmp / f"{label}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    BINARY,
                    "worker",
                    "--concurrency",
                    str(WORKER_CONCURRENCY),
                    "--loglevel",
                    loglevel,
                ],
                env=self.env | (env or {}),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        worker = Worker(label, proc, log)
        self.workers.append(worker)
        return worker

    def received_tasks(self) -> set[str]:
        """Ids of every ``drain`` task any worker of this run has received so far."""
        return set().union(*(drain_tasks(w.text())[0] for w in self.workers))

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {w.label} ---\n{w.text()}" for w in self.workers)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of one query on this run's database (a fresh connection: it survives restarts)."""
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            return conn.execute(sql, params or None).fetchall()

    def counts(self) -> dict[str, int]:
        """Requests per status, straight from the database (cheaper than ``status``)."""
        return dict(self.query("SELECT status, count(*) FROM requests GROUP BY status"))

    def status(self) -> dict[str, Any]:
        return orjson.loads(self.cli("status", self.name, "--json").stdout)

    def wait_finished(self, *, timeout: float) -> dict[str, Any]:
        """Wait until the batch is no longer running; fail with the counts and logs if not."""

        def finished() -> bool:
            rows = self.query("SELECT status FROM batches WHERE name = %s", self.name)
            return bool(rows) and rows[0][0] != "running"

        try:
            wait_until(finished, "the batch to finish", timeout=timeout, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; counts {self.counts()}\n{self.logs()[-6000:]}") from None
        return self.status()

    def snapshot(self) -> list[tuple[Any, ...]]:
        """Every column of every request and batch row, in a stable order."""
        requests = self.query("SELECT * FROM requests ORDER BY id")
        batches = self.query("SELECT * FROM batches ORDER BY id")
        return requests + batches

    def session_states(self) -> list[str]:
        """The state of every other client session on this database (only workers connect)."""
        rows = self.query(
            "SELECT coalesce(state, '') FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return [row[0] for row in rows]

    def locked_rows(self) -> list[int]:
        """Active requests that another session holds a row lock on."""
        active = "status IN ('queued', 'submitting', 'submitted')"
        with psycopg.connect(self.dsn, connect_timeout=10) as conn:
            every = {row[0] for row in conn.execute(f"SELECT id FROM requests WHERE {active}")}
            free = conn.execute(f"SELECT id FROM requests WHERE {active} FOR UPDATE SKIP LOCKED")
            unlocked = {row[0] for row in free}
            conn.rollback()
        return sorted(every - unlocked)

    def _pause_settled(self, worker: Worker) -> None:
        """SIGSTOP ``worker`` and wait until the statement it had sent, if any, has ended. One of
        its threads may be waiting on a lock another of its threads holds, frozen; that ends only
        when PostgreSQL closes the frozen session, a lease (``idle_in_transaction``) later."""
        worker.pause()
        wait_until(
            lambda: "active" not in self.session_states(),
            f"the statement {worker.label} had sent to end",
            timeout=30,
        )

    def _resume_briefly(self, worker: Worker) -> None:
        worker.resume()
        time.sleep(random.uniform(0.005, 0.05))

    def pause_holding_row_locks(self, worker: Worker, *, attempts: int = 300) -> list[int]:
        """SIGSTOP ``worker`` at a moment it holds a transaction with row locks open (only
        ``worker`` may be connected); returns the locked request ids."""
        for _ in range(attempts):
            self._pause_settled(worker)
            locked = self.locked_rows()
            if locked:
                return locked
            self._resume_briefly(worker)
        raise AssertionError(f"{worker.label} never held a row lock in {attempts} tries")

    def pause_between_transactions(self, worker: Worker, *, attempts: int = 200) -> int:
        """SIGSTOP ``worker`` at a moment it holds no transaction open (only ``worker`` may be
        connected); returns how many tries it took."""
        for attempt in range(1, attempts + 1):
            self._pause_settled(worker)
            if not any(s.startswith("idle in transaction") for s in self.session_states()):
                return attempt
            self._resume_briefly(worker)
        raise AssertionError(f"{worker.label} was inside a transaction {attempts} times running")


def _expected_usage_totals(bodies: Iterable[dict[str, Any]]) -> dict[str, int]:
    """The simulator's usage for ``bodies``, summed the way ``status`` reports it."""
    totals = dict.fromkeys(USAGE_COLUMNS, 0)
    for body in bodies:
        usage = expected_usage(body)
        totals["prompt_tokens"] += usage["prompt_tokens"]
        totals["completion_tokens"] += usage["completion_tokens"]
        totals["total_tokens"] += usage["total_tokens"]
        totals["billed_units"] += usage["billed_units"]
        totals["reasoning_tokens"] += usage["completion_tokens_details"]["reasoning_tokens"]
        totals["cached_tokens"] += usage["prompt_tokens_details"]["cached_tokens"]
    return totals


def check_invariants(
    run: FaultRun,
    status: dict[str, Any],
    *,
    max_possible_duplicates: int,
    all_succeeded: bool = True,
) -> None:
    """What no fault may break: no result lost, no uncounted resubmission, exact usage, no
    leaked key. ``max_possible_duplicates`` is how many POSTs the fault could have cut off in
    flight (8 per worker hit)."""
    n = len(run.bodies)
    counts = status["counts"]
    context = f"status {status}\n{run.logs()[-6000:]}"

    # 1. Nothing lost: every request finished, and any that did not succeed says why.
    assert status["status"] == "completed", context
    assert status["total"] == n and sum(counts.values()) == n, context
    assert all(counts.get(s, 0) == 0 for s in ACTIVE), context
    unexplained = run.query(
        "SELECT custom_id, status FROM requests WHERE status <> 'succeeded' "
        "AND (error_code IS NULL OR error_message IS NULL)"
    )
    assert unexplained == [], unexplained
    incomplete = run.query(
        "SELECT custom_id FROM requests WHERE status = 'succeeded' "
        "AND (response IS NULL OR remote_id IS NULL OR completed_at IS NULL)"
    )
    assert incomplete == [], incomplete
    if all_succeeded:
        assert counts["succeeded"] == n, context

    # 2. Every request reached the provider; any resubmission is counted, and only POSTs the
    # fault cut off in flight can be counted.
    stats = run.sim.stats()
    assert len(stats["accepted_by_fingerprint"]) == n, "some request never reached the provider"
    resubmitted = stats["accepted"] - n
    duplicates = status["possible_duplicates"]
    assert 0 <= resubmitted <= duplicates <= max_possible_duplicates, (
        f"accepted {stats['accepted']} for {n} requests, possible_duplicates {duplicates}, "
        f"at most {max_possible_duplicates} in flight"
    )

    # 3. Exact usage: the sum of what the provider returned for each request that succeeded.
    succeeded = {
        row[0] for row in run.query("SELECT custom_id FROM requests WHERE status = 'succeeded'")
    }
    expected = _expected_usage_totals(
        body for i, body in enumerate(run.bodies) if f"id-{i}" in succeeded
    )
    assert {k: status["usage"][k] for k in expected} == expected

    # 4. The API key is nowhere: not in logs, CLI output or the database.
    secret = run.secret
    for worker in run.workers:
        assert secret not in worker.text(), f"API key in {worker.log}"
    assert not any(secret in output for output in run.outputs), "API key in CLI output"
    assert secret not in database_dump("postgresql+psycopg" + run.dsn[len("postgresql") :])
    assert secret not in run.postgres.dump(run.database), "API key in pg_dump"


def drain_tasks(log: str) -> tuple[set[str], set[str]]:
    """Ids of the ``drain`` tasks a worker's INFO log shows received, and those it finished."""
    received = set(re.findall(r"Task chatbatch\.drain\[([0-9a-f-]+)\] received", log))
    finished = set(
        re.findall(r"Task chatbatch\.drain\[([0-9a-f-]+)\] (?:succeeded|raised|failed)", log)
    )
    return received, finished
