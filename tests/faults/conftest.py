"""Fixtures for the fault-injection tests.

Faults hit Redis and PostgreSQL themselves (flushed, restarted), so these tests never use the
machine's shared servers: each pytest run starts a private ``redis-server`` and a private
PostgreSQL cluster on free ports, and removes them at the end. Every test gets a fresh database
(migrated with ``chatbatch db upgrade``), a Celery queue and an API key of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_process import BINARY, base_env
from faultkit import FaultRun, PrivatePostgres, PrivateRedis, ServiceError
from netns import Hosts, NetnsError, unavailable_reason

IN_CI = bool(os.environ.get("CI"))

# Short timers so that a lost lease or message costs seconds, not minutes. The lease must exceed
# connect + 2 x read timeout + 5 s (settings validation).
FAULT_POLICY = {
    "CHATBATCH_POLL_FIRST_SECONDS": "0.2",
    "CHATBATCH_POLL_MAX_SECONDS": "1",
    "CHATBATCH_RETRY_BASE_SECONDS": "0.2",
    "CHATBATCH_RETRY_MAX_SECONDS": "2",
    "CHATBATCH_TICK_SECONDS": "0.3",
    "CHATBATCH_TASK_BUDGET_SECONDS": "5",
    "CHATBATCH_CONNECT_TIMEOUT": "1",
    "CHATBATCH_READ_TIMEOUT": "3",
    "CHATBATCH_LEASE_SECONDS": "12.5",
}


def unavailable(what: str, exc: BaseException | str) -> None:
    """A private server (or the network namespaces) could not be made: fail in CI (root, with
    iproute2), skip elsewhere."""
    message = f"cannot start {what} for the fault tests: {exc}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def hosts(request: pytest.FixtureRequest) -> Iterator[Hosts]:
    """``@pytest.mark.hosts(N)`` network namespaces (default 1), removed whatever happens."""
    marker = request.node.get_closest_marker("hosts")
    count = marker.args[0] if marker else 1
    reason = unavailable_reason()
    if reason is not None:
        unavailable("network namespaces", reason)
    try:
        lab = Hosts(count).__enter__()
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        unavailable("network namespaces", exc)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="session")
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this run's own; tests may flush or restart it."""
    workdir = Path(tempfile.mkdtemp(prefix="chatbatch-faults-redis-"))
    server = PrivateRedis(workdir)
    try:
        try:
            server.start()
        except (ServiceError, OSError) as exc:
            unavailable("a private redis-server", exc)
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this run's own; tests may stop and restart it."""
    root = Path(tempfile.mkdtemp(prefix="chatbatch-faults-pg-"))
    cluster: PrivatePostgres | None = None
    try:
        try:
            cluster = PrivatePostgres(root)
            cluster.init()
            cluster.start()
        except (ServiceError, OSError, LookupError) as exc:
            unavailable("a private PostgreSQL cluster", exc)
        assert cluster is not None
        yield cluster
    finally:
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fault_run(
    private_redis: PrivateRedis, private_postgres: PrivatePostgres, sim, tmp_path: Path
) -> Iterator[FaultRun]:
    """A fresh migrated database, a queue and an API key of this test's own, the simulator as
    the provider; workers the test started are stopped at the end, whatever happened."""
    if BINARY is None:
        unavailable("chatbatch workers", FileNotFoundError("the chatbatch binary is not installed"))
    # A previous test may have failed while a server was down.
    if not private_redis.running():
        private_redis.start()
    if not private_postgres.running():
        private_postgres.start()
    tag = uuid.uuid4().hex[:10]
    database = f"faults_{tag}"
    dsn = private_postgres.create_database(database)
    secret = f"sk-faults-{uuid.uuid4().hex}"
    sim.reconfigure(api_keys=[secret])
    env = (
        base_env()
        | FAULT_POLICY
        | {
            "CHATBATCH_DATABASE_URL": "postgresql+psycopg" + dsn[len("postgresql") :],
            "CHATBATCH_BROKER_URL": private_redis.url,
            "CHATBATCH_QUEUE": f"chatbatch-faults-{tag}",
            "CHATBATCH_API_BASE": sim.base_url,
            "GEEKAI_API_KEY": secret,
        }
    )
    run = FaultRun(
        env=env, dsn=dsn, database=database, postgres=private_postgres, sim=sim, tmp=tmp_path
    )
    run.cli("db", "upgrade")
    try:
        yield run
    finally:
        run.stop_workers()
