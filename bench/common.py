"""What every benchmark needs: a PostgreSQL database of its own, a Redis queue of its own, the
simulator, prompt files, and ``chatbatch`` subprocesses. Benchmarks print figures; they assert
nothing about time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg

from simulator.embedded import SimulatorHandle

ADMIN_URL = os.environ.get(
    "CHATBATCH_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CHATBATCH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BINARY = shutil.which(
    "chatbatch",
    path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, migrated PostgreSQL database, dropped afterwards; yields its SQLAlchemy URL."""
    from chatbatch.store.db import make_engine
    from chatbatch.store.migrate import upgrade

    name = f"chatbatch_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = "postgresql+psycopg://" + ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name
    engine = make_engine(url, pool_size=1)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def chat_body(i: int) -> dict[str, object]:
    """A small chat request, different for every ``i``."""
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Label the sentiment."},
            {"role": "user", "content": f"review {i}: the product was fine"},
        ],
    }


def write_prompts(path: Path, n: int) -> Path:
    """``n`` OpenAI-Batch-shaped request lines."""
    with path.open("wb") as fh:
        for i in range(n):
            line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
            fh.write(orjson.dumps({**line, "body": chat_body(i)}) + b"\n")
    return path


def environment(database_url: str, api_base: str, **extra: str) -> dict[str, str]:
    """The environment of ``chatbatch`` subprocesses: this database, a queue of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBATCH_")}
    return env | {
        "CHATBATCH_DATABASE_URL": database_url,
        "CHATBATCH_BROKER_URL": REDIS_URL,
        "CHATBATCH_QUEUE": f"bench-{uuid.uuid4().hex[:8]}",
        "CHATBATCH_API_BASE": api_base,
        "CHATBATCH_API_KEY": "sk-simulator",
        **extra,
    }


def run_cli(*args: str, env: dict[str, str]) -> str:
    """Run ``chatbatch ARGS`` to completion; its stdout."""
    assert BINARY, "install chatbatch first (pip install .)"
    done = subprocess.run([BINARY, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"chatbatch {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


@contextmanager
def workers(env: dict[str, str], count: int, concurrency: int, log_dir: Path) -> Iterator[None]:
    """``count`` ``chatbatch worker`` processes, stopped on exit."""
    assert BINARY, "install chatbatch first (pip install .)"
    procs = []
    for i in range(count):
        with (log_dir / f"worker{i}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [BINARY, "worker", "--concurrency", str(concurrency), "--loglevel", "WARNING"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_all_finished(database_url: str, total: int, timeout: float = 3600) -> float:
    """Block until every request is terminal; returns the monotonic time it happened. Counting
    a million rows takes PostgreSQL a while, so the pause between counts grows with the count's
    own cost: the watcher never takes more than a sixth of a core from what it measures."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while (asked := time.monotonic()) < deadline:
            row = conn.execute(
                "SELECT count(*) FROM requests WHERE status IN "
                "('succeeded', 'failed', 'expired', 'cancelled')"
            ).fetchone()
            if row and row[0] >= total:
                return time.monotonic()
            time.sleep(max(0.05, 5 * (time.monotonic() - asked)))
    raise SystemExit(f"not finished within {timeout} s")


@contextmanager
def vacuuming(database_url: str, every: float | None) -> Iterator[None]:
    """``VACUUM requests`` every ``every`` seconds (None: never) until the block ends, as
    autovacuum would on a server that runs it: on one that does not, claimed rows pile up as
    dead index entries at the head of the queue and every claim walks them (measured with one
    batch of 1,000,000: 265 items/s fell to 53 after 160,000 claims, and rose again at once
    after one VACUUM)."""
    if every is None:
        yield
        return
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    done = threading.Event()

    def vacuum() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not done.wait(every):
                conn.execute("VACUUM requests")

    thread = threading.Thread(target=vacuum, name="vacuum", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def time_warm_batch(
    sim: SimulatorHandle,
    n: int,
    *,
    worker_count: int,
    concurrency: int,
    vacuum_every: float | None = None,
    **settings: str,
) -> tuple[float, dict[str, Any]]:
    """Seconds from ``load`` returning to all ``n`` requests finished, with ``worker_count``
    workers already running (warmed up on a one-request batch) as in a deployment, and the
    simulator's counters for the batch; ``settings`` are further ``CHATBATCH_*`` variables;
    ``vacuum_every`` stands in for autovacuum (``vacuuming``)."""
    with fresh_database() as url, tempfile.TemporaryDirectory() as tmp:
        env = environment(url, sim.base_url, CHATBATCH_CONCURRENCY=str(concurrency), **settings)
        warmup = write_prompts(Path(tmp) / "warmup.jsonl", 1)
        prompts = write_prompts(Path(tmp) / "prompts.jsonl", n)
        with workers(env, count=worker_count, concurrency=concurrency, log_dir=Path(tmp)):
            run_cli("load", str(warmup), "--name", "warmup", env=env)
            wait_all_finished(url, 1)
            sim.reset()
            run_cli("load", str(prompts), "--name", "bench", env=env)
            started = time.monotonic()
            with vacuuming(url, vacuum_every):
                finished = wait_all_finished(url, n + 1, timeout=max(3600, n / 50))
    return finished - started, sim.stats()
