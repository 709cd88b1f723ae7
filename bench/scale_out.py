"""Benchmark 6 — scale-out: the same batch through one ``chatbatch worker``, then two.

Prints items/s for each, the ratio two / one (2.0 would be perfect; this machine has 2 cores
shared with PostgreSQL and the simulator), and checks no request was handled twice: the
simulator must have accepted exactly one submission per request.

    python -m bench.scale_out            # N = 3000
    python -m bench.scale_out --quick    # N = 300, a smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import (
    environment,
    fresh_database,
    run_cli,
    wait_all_finished,
    workers,
    write_prompts,
)
from simulator.config import SimConfig
from simulator.testing import SimulatorHandle, running_simulator


def measure(sim: SimulatorHandle, n: int, count: int) -> tuple[float, dict]:
    """Seconds from ``load`` to every request finished with ``count`` workers, and the
    simulator's counters."""
    sim.reset()
    with fresh_database() as url, tempfile.TemporaryDirectory() as tmp:
        env = environment(url, sim.base_url)
        warmup = write_prompts(Path(tmp) / "warmup.jsonl", 1)
        prompts = write_prompts(Path(tmp) / "prompts.jsonl", n)
        with workers(env, count=count, concurrency=16, log_dir=Path(tmp)):
            run_cli("load", str(warmup), "--name", "warmup", env=env)
            wait_all_finished(url, 1)
            sim.reset()
            run_cli("load", str(prompts), "--name", "bench", env=env)
            started = time.monotonic()
            finished = wait_all_finished(url, n + 1)
    return finished - started, sim.stats()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="N = 300")
    args = parser.parse_args()
    n = 300 if args.quick else args.n
    with running_simulator(SimConfig(latency="0")) as sim:
        one_s, one_stats = measure(sim, n, 1)
        two_s, two_stats = measure(sim, n, 2)
    print(f"scale-out: N={n}, simulator latency 0, 16 in flight per worker")
    for label, seconds, stats in (("1 worker ", one_s, one_stats), ("2 workers", two_s, two_stats)):
        twice = len(stats["duplicate_fingerprints"])
        print(
            f"  {label}  {seconds:7.2f} s  {n / seconds:7.0f} items/s  accepted "
            f"{stats['accepted']} for {n} requests, {twice} submitted twice"
        )
    print(f"  throughput ratio two / one  {one_s / two_s:5.2f}")


if __name__ == "__main__":
    main()
