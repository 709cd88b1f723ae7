"""Benchmark 2 — polling efficiency: GETs per result and how late results are fetched.

2,000 requests whose completion times follow a wide log-normal distribution (median 5 s,
sigma 1) go through one ``chatbatch worker``, twice: first on a fresh database, where the model's
completion times are unknown and polls follow the fixed geometric schedule until enough results
came back, then as a second batch of the same model, planned from what the first one showed.
The simulator records, per task, when its outcome became ready and when a poll first saw it.
Prints GETs per result (target <= 2.0) and the median fetch delay as a fraction of the median
completion time (target <= 20%); the ideal, a poll exactly when each result is ready, is 1 GET
and 0 s. Also prints what the planner would achieve knowing the distribution exactly, for
several GET budgets: the best any schedule of this kind can do.

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
from chatbatch.rules.polling import (
    GeometricPolls,
    PlannedPolls,
    lognormal_sample,
    plan_poll_ages,
    simulate,
)
from simulator.config import SimConfig
from simulator.embedded import SimulatorHandle, running_simulator

FALLBACK = GeometricPolls(first=1.0, factor=1.5, longest_wait=60.0)  # the settings' defaults


def report(label: str, sim: SimulatorHandle, n: int, seconds: float) -> None:
    stats = sim.stats()
    completion = stats["median_completion_seconds"]
    delay = stats["median_fetch_delay_seconds"]
    print(f"  {label}")
    print(f"    wall time                     {seconds:7.1f} s")
    print(
        f"    GETs per result               {stats['gets'] / n:7.2f}   (ideal 1.00, target <= 2.0)"
    )
    print(f"    median completion time        {completion:7.2f} s")
    print(
        f"    median fetch delay            {delay:7.2f} s = {delay / completion:.0%} of the "
        "median completion time (target <= 20%)"
    )


def frontier(median: float, sigma: float) -> None:
    """The planner's figures with the true distribution known, for a few GET budgets."""
    known = lognormal_sample(median, sigma, 2000, seed=1)
    fresh = lognormal_sample(median, sigma, 5000, seed=2)
    fixed_gets, fixed_delay = simulate(FALLBACK, fresh)
    print("  with the distribution known exactly (simulated, no HTTP):")
    print(
        f"    fixed geometric schedule      {fixed_gets:5.2f} GETs/result, median delay "
        f"{fixed_delay / median:.0%}"
    )
    for budget in (1.5, 2.0, 2.5, 3.0, 4.0):
        gets, delay = simulate(PlannedPolls(plan_poll_ages(known, budget), FALLBACK), fresh)
        print(
            f"    plan for <= {budget:3.1f} GETs         {gets:5.2f} GETs/result, "
            f"median delay {delay / median:.0%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--median", type=float, default=5.0, help="median completion seconds")
    parser.add_argument("--sigma", type=float, default=1.0, help="log-normal spread")
    parser.add_argument("--quick", action="store_true", help="N = 200, median 1 s")
    args = parser.parse_args()
    n, median = (200, 1.0) if args.quick else (args.n, args.median)
    latency = f"lognormal:{median},{args.sigma}"
    print(f"polling: N={n} per batch, completion times {latency} (seconds), one worker")
    with (
        running_simulator(SimConfig(latency=latency)) as sim,
        fresh_database() as url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        env = environment(url, sim.base_url)
        with workers(env, count=1, concurrency=16, log_dir=Path(tmp)):
            for done, label in enumerate(
                (
                    "first batch of the model (nothing learned yet)",
                    "second batch (polls planned from the first)",
                )
            ):
                prompts = write_prompts(Path(tmp) / f"prompts{done}.jsonl", n)
                sim.reset()
                started = time.monotonic()
                run_cli("load", str(prompts), "--name", f"polling{done}", env=env)
                finished = wait_all_finished(url, n * (done + 1))
                report(label, sim, n, finished - started)
    frontier(median, args.sigma)


if __name__ == "__main__":
    main()
