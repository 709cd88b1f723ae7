"""Helpers for tests that drive the engine in-process against PostgreSQL and the simulator."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import orjson
from sqlalchemy import Engine, select

from chatbatch.input.loading import load_jsonl
from chatbatch.reporting.summary import batch_summary
from chatbatch.settings import get_settings
from chatbatch.store import reads
from chatbatch.store.models import requests_table as r
from worker.engine import Engine as BatchEngine
from worker.runtime import build_engine


def write_requests(path: Path, n: int, **extra: object) -> list[dict[str, object]]:
    bodies = []
    with path.open("w") as fh:
        for i in range(n):
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"request number {i}"}],
                **extra,
            }
            bodies.append(body)
            fh.write(orjson.dumps({"custom_id": f"c{i}", "body": body}).decode() + "\n")
    return bodies


def load(db: Engine, path: Path) -> str:
    with db.begin() as conn:
        return load_jsonl(conn, path, name=None, default_model=None, max_line_bytes=1 << 20).id


def run_to_end(engine: BatchEngine, db: Engine, batch_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        engine.housekeeping()
        if not engine.drain(budget_seconds=1.0):
            time.sleep(0.05)
        with db.connect() as conn:
            summary = batch_summary(
                conn, reads.resolve_batch(conn, batch_id), expiry_warning=timedelta(0)
            )
        if summary["status"] not in ("running", "cancelling"):
            return summary
    raise AssertionError(f"batch did not finish: {summary}")


def rows(db: Engine, batch_id: str) -> list:
    with db.connect() as conn:
        return conn.execute(select(r).where(r.c.batch_id == batch_id).order_by(r.c.line_no)).all()


def run_with_current_settings(db: Engine, batch_id: str, timeout: float = 60) -> dict:
    """Run the batch with an engine built from the settings as the test left them."""
    built = build_engine(get_settings())
    try:
        return run_to_end(built, db, batch_id, timeout)
    finally:
        built.close()
