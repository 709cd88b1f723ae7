"""Per-process singletons: one database engine, one provider client, one engine."""

from __future__ import annotations

import threading

from chatbatch.providers import provider_table
from chatbatch.rules.ratelimits import Tuning, parse_limits
from chatbatch.settings import Settings, get_settings
from chatbatch.store.db import get_engine
from worker.engine import Engine
from worker.liveness import Heartbeat
from worker.providers import ProviderSet
from worker.ratelimit import build_rate_limiter

_lock = threading.Lock()
_engine: Engine | None = None


TASK_THREADS = 2  # chunk tasks one `chatbatch worker` runs at once; HTTP concurrency is shared


def build_engine(
    settings: Settings,
    *,
    task_threads: int = 1,
    batch_id: str | None = None,
    kind: str | None = None,
) -> Engine:
    """A new engine for the configured database and providers (working only ``batch_id``, if
    given); needs a usable key for each provider. Given ``kind`` (worker, run, process), it
    registers as a worker and heartbeats until closed, so a lost process's claims are taken
    over quickly."""
    table = provider_table(settings)
    providers = ProviderSet.from_settings(settings, table)  # every key checked
    limiter = build_rate_limiter(
        {**parse_limits(settings.rate_limits), **table.rate_limits()},
        redis_url=settings.broker_url,
        prefix=f"chatbatch:ratelimit:{settings.queue}",
        tuning=Tuning(retry_after_max=settings.retry_max_seconds),
    )
    heartbeat = None
    if kind is not None:
        heartbeat = Heartbeat(get_engine(), kind=kind, interval=settings.heartbeat_seconds)
        heartbeat.start()
    return Engine(
        heartbeat=heartbeat,
        db=get_engine(),
        provider=providers,
        settings=settings,
        limiter=limiter,
        task_threads=task_threads,
        batch_id=batch_id,
    )


def process_engine() -> Engine:
    """The engine shared by every task of this worker process (built on first use)."""
    global _engine
    with _lock:
        if _engine is None:
            _engine = build_engine(get_settings(), task_threads=TASK_THREADS, kind="worker")
        return _engine


def stop_process_engine() -> None:
    """Stop this process's engine cleanly, if it was built."""
    with _lock:
        engine = _engine
    if engine is not None:
        engine.stop()


def close_process_engine() -> None:
    """Close this process's engine at exit, if it was built: its heartbeat marks it stopped."""
    with _lock:
        engine = _engine
    if engine is not None:
        engine.close()


def reset_after_fork() -> None:
    """Forget the parent's pools in a forked child (pooled connections must not cross fork)."""
    global _engine
    get_engine().dispose(close=False)
    _engine = None
