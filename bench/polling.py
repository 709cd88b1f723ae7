"""Benchmark 2 — polling efficiency: GETs per result and how late results are fetched.

2,000 requests whose completion times follow a wide log-normal distribution (median 5 s,
sigma 1) go through one ``chatbatch worker`` with the default poll schedule. The simulator
records, per task, when its outcome became ready and when a poll first saw it. Prints GETs per
result (target <= 2.0) and the median fetch delay as a fraction of the median completion time
(target <= 20%); the ideal, a poll exactly when each result is ready, is 1 GET and 0 s.

    python -m bench.polling            # N = 2000, median 5 s
    python -m bench.polling --quick    # N = 200, median 1 s, a smoke run
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
from simulator.testing import running_simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--median", type=float, default=5.0, help="median completion seconds")
    parser.add_argument("--sigma", type=float, default=1.0, help="log-normal spread")
    parser.add_argument("--quick", action="store_true", help="N = 200, median 1 s")
    args = parser.parse_args()
    n, median = (200, 1.0) if args.quick else (args.n, args.median)
    latency = f"lognormal:{median},{args.sigma}"
    with (
        running_simulator(SimConfig(latency=latency)) as sim,
        fresh_database() as url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        env = environment(url, sim.base_url)
        prompts = write_prompts(Path(tmp) / "prompts.jsonl", n)
        run_cli("load", str(prompts), "--name", "polling", env=env)
        started = time.monotonic()
        with workers(env, count=1, concurrency=16, log_dir=Path(tmp)):
            finished = wait_all_finished(url, n)
        stats = sim.stats()
    completion = stats["median_completion_seconds"]
    delay = stats["median_fetch_delay_seconds"]
    print(f"polling: N={n}, completion times {latency} (seconds), default poll schedule")
    print(f"  wall time                       {finished - started:7.1f} s")
    print(
        f"  GETs per result                 {stats['gets'] / n:7.2f}   (ideal 1.00, target <= 2.0)"
    )
    print(f"  median completion time          {completion:7.2f} s")
    print(
        f"  median fetch delay              {delay:7.2f} s = {delay / completion:.0%} of the "
        "median completion time (ideal 0%, target <= 20%)"
    )


if __name__ == "__main__":
    main()
