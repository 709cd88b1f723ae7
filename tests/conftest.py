"""Shared fixtures: a migrated PostgreSQL database of this run's own, Redis, the simulator.

A test that needs PostgreSQL or Redis fails (never skips) when CI is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hook_receiver import Receiver, receiving
from sqlalchemy import Engine, text

from chatbatch.settings import Settings, get_settings
from chatbatch.store.db import get_engine, make_engine
from chatbatch.store.migrate import upgrade

ADMIN_URL = os.environ.get(
    "CHATBATCH_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CHATBATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Real OpenAI Batch files written by other people; they live beside the repository, not in it.
FIXTURES = Path(
    os.environ.get(
        "CHATBATCH_FIXTURES_DIR",
        Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "openai-batch",
    )
)
IN_CI = bool(os.environ.get("CI"))


def service_missing(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable: {exc}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A freshly created and migrated database, dropped at the end of the run."""
    name = f"chatbatch_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        service_missing("PostgreSQL", exc)
        raise
    admin.execute(f'CREATE DATABASE "{name}"')
    url = "postgresql+psycopg://" + ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name
    engine = make_engine(url, pool_size=1)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def admin_url(pg_url: str) -> str:
    """A superuser connection to the server behind ``pg_url``, for creating databases."""
    return ADMIN_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_missing("Redis", exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def sim_session():
    from simulator.embedded import running_simulator

    with running_simulator() as handle:
        yield handle


@pytest.fixture
def sim(sim_session):
    """The simulator with default behaviour and empty counters."""
    from simulator.config import SimConfig

    defaults = SimConfig()
    sim_session.reset()
    sim_session.reconfigure(**{k: getattr(defaults, k) for k in defaults.__dataclass_fields__})
    sim_session.reconfigure(latency="0.05")
    return sim_session


FAST_POLICY = {
    "CHATBATCH_POLL_FIRST_SECONDS": "0.05",
    "CHATBATCH_POLL_MAX_SECONDS": "0.5",
    "CHATBATCH_RETRY_BASE_SECONDS": "0.05",
    "CHATBATCH_RETRY_MAX_SECONDS": "0.5",
    "CHATBATCH_TICK_SECONDS": "0.2",
    "CHATBATCH_CONNECT_TIMEOUT": "2",
    "CHATBATCH_READ_TIMEOUT": "5",
    "CHATBATCH_LEASE_SECONDS": "30",
}


def apply_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for key in list(os.environ):
        if key.startswith("CHATBATCH_") or key == "GEEKAI_API_KEY":
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    get_engine.cache_clear()
    return get_settings()


@pytest.fixture
def db(monkeypatch: pytest.MonkeyPatch, pg_url: str) -> Iterator[Engine]:
    """Settings pointing at the test database (tables emptied first); no provider."""
    apply_env(monkeypatch, {"CHATBATCH_DATABASE_URL": pg_url, **FAST_POLICY})
    engine = get_engine()
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE batches, workers, notifications CASCADE"))
    yield engine
    engine.dispose()
    get_engine.cache_clear()
    get_settings.cache_clear()


@pytest.fixture
def pg(db: Engine, monkeypatch: pytest.MonkeyPatch, sim) -> Engine:
    """The test database plus the simulator as the provider."""
    monkeypatch.setenv("CHATBATCH_API_BASE", sim.base_url)
    monkeypatch.setenv("CHATBATCH_API_KEY", "sk-simulator")
    get_settings.cache_clear()
    return db


@pytest.fixture
def fixtures_dir() -> Path:
    """The real OpenAI Batch files: a clone of the repository alone lacks them, so tests that
    read them skip there (saying where they are looked for); under CI they must be present."""
    if not FIXTURES.is_dir():
        message = (
            f"the real OpenAI Batch files are expected at {FIXTURES} "
            "(set CHATBATCH_FIXTURES_DIR to point elsewhere)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return FIXTURES


@pytest.fixture
def distributed_env(pg_url: str, redis_url: str, sim) -> Iterator[dict[str, str]]:
    """Environment for ``chatbatch`` subprocesses: the test database (emptied), Redis with a
    queue of this test's own, and the simulator as the provider."""
    import redis
    from cli_process import base_env

    engine = make_engine(pg_url, pool_size=1)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE batches, workers, notifications CASCADE"))
    engine.dispose()
    queue = f"chatbatch-test-{uuid.uuid4().hex[:8]}"
    env = base_env() | {
        "CHATBATCH_DATABASE_URL": pg_url,
        "CHATBATCH_BROKER_URL": redis_url,
        "CHATBATCH_QUEUE": queue,
        "CHATBATCH_API_BASE": sim.base_url,
        "GEEKAI_API_KEY": "sk-simulator",
        "CHATBATCH_POLL_FIRST_SECONDS": "0.2",
        "CHATBATCH_POLL_MAX_SECONDS": "1",
        "CHATBATCH_TICK_SECONDS": "0.3",
    }
    yield env
    client = redis.Redis.from_url(redis_url)
    client.delete(queue)
    client.close()


@pytest.fixture
def hook() -> Iterator[Receiver]:
    """A webhook receiver on loopback (``hook_receiver``), for the notification tests."""
    with receiving() as server:
        yield server
