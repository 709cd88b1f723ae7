"""Benchmark 7 — rate limits: the simulator accepts at most R POSTs per minute (a sliding 60 s
window; it answers 429 with Retry-After beyond that and publishes R at GET /models), and two
``chatbatch worker`` processes share the limit. Target: sustained throughput >= 95 % of R with
< 2 % of POSTs answered 429.

Two variants, each with a fresh database and queue:
  configured  CHATBATCH_RATE_LIMITS="gpt-4o-mini=R": the workers know the limit;
  learned     no CHATBATCH_RATE_LIMITS: the limit is only published at GET /models and enforced,
              so the workers must read it there or learn it from the 429s (AIMD).

Prints, per variant: R, throughput (accepted submissions per minute between the 10th and 90th
percentile of acceptance times, i.e. the steady part), POSTs, the fraction answered 429, and a
check that no request was accepted twice. A run of N requests needs N > R to test anything, and
takes about N / R minutes when the limiter works.

    python -m bench.rate_limits                 # R = 600, N = 2400 (about 4 minutes a variant)
    python -m bench.rate_limits --quick         # R = 600, N = 300: a smoke run, limits untouched
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import (
    environment,
    fresh_database,
    run_cli,
    wait_all_finished,
    workers,
    write_prompts,
)
from simulator.config import SimConfig
from simulator.embedded import SimulatorHandle, running_simulator

MODEL = "gpt-4o-mini"  # what bench.common.chat_body asks for
WORKERS = 2
CONCURRENCY = 16


def run_variant(
    sim: SimulatorHandle, n: int, rpm: int, rate_limits: str | None
) -> tuple[tuple[float, float], dict[str, Any], float]:
    """Run ``n`` requests through two workers; (accepted per minute in the steady part, the
    simulator's counters, wall seconds). The simulator's window is emptied first."""
    extra = {"CHATBATCH_CONCURRENCY": str(CONCURRENCY)}
    if rate_limits is not None:
        extra["CHATBATCH_RATE_LIMITS"] = rate_limits
    with fresh_database() as url, tempfile.TemporaryDirectory() as tmp:
        env = environment(url, sim.base_url, **extra)
        prompts = write_prompts(Path(tmp) / "prompts.jsonl", n)
        with workers(env, count=WORKERS, concurrency=CONCURRENCY, log_dir=Path(tmp)):
            time.sleep(2.0)  # let both workers start before the batch appears
            sim.reset()
            started = time.monotonic()
            run_cli("load", str(prompts), "--name", "bench", env=env)
            finished = wait_all_finished(url, n, timeout=max(600.0, 4 * 60 * n / rpm))
        per_minute = steady_rate(url)
    return per_minute, sim.stats(), finished - started


def steady_rate(database_url: str) -> tuple[float, float]:
    """Accepted submissions per minute between the 10th and 90th percentile acceptance times,
    and between the first and the last (the first minute's burst included)."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM submitted_at) FROM requests "
            "WHERE submitted_at IS NOT NULL ORDER BY submitted_at"
        ).fetchall()
    times = [float(row[0]) for row in rows]
    if len(times) < 10:
        return float("nan"), float("nan")
    low, high = len(times) // 10, len(times) * 9 // 10
    return _per_minute(high - low, times[high] - times[low]), _per_minute(
        len(times) - 1, times[-1] - times[0]
    )


def _per_minute(count: int, seconds: float) -> float:
    return count / seconds * 60 if seconds > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", type=int, default=600, help="the simulator's limit R")
    parser.add_argument("--n", type=int, default=2400, help="requests per variant")
    parser.add_argument("--quick", action="store_true", help="N = 300 (R = 600: no 429 needed)")
    args = parser.parse_args()
    n = 300 if args.quick else args.n
    rpm = args.rpm
    variants = {"configured": f"{MODEL}={rpm}", "learned": None}
    results = {}
    with running_simulator(SimConfig(latency="0", rpm=rpm)) as sim:
        for name, rate_limits in variants.items():
            results[name] = run_variant(sim, n, rpm, rate_limits)
    print(f"rate limits: R={rpm} rpm (simulator, sliding 60 s window), N={n},")
    print(f"  {WORKERS} workers x {CONCURRENCY} in flight, simulator latency 0")
    for name, ((per_minute, overall), stats, seconds) in results.items():
        posts, refused = stats["posts"], stats["rejected"]["429"]
        twice = len(stats["duplicate_fingerprints"])
        print(
            f"  {name:<10}  {per_minute:8.0f} accepted/min = {per_minute / rpm:5.2f} R "
            f"(first to last {overall / rpm:5.2f} R)   "
            f"429s {refused}/{posts} POSTs = {refused / max(1, posts):6.2%}   {seconds:6.1f} s   "
            f"accepted {stats['accepted']} for {n} requests, {twice} submitted twice"
        )
    print("  target: >= 0.95 R with < 2% of POSTs answered 429")


if __name__ == "__main__":
    main()
