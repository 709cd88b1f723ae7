"""Benchmark 6 — scale-out: the same batch through one ``chatbatch worker``, then two.

Prints items/s for each, the ratio two / one (2.0 would be perfect; this machine has 2 cores
shared with PostgreSQL and the simulator), and checks no request was handled twice: the
simulator must have accepted exactly one submission per request.

    python -m bench.scale_out            # N = 3000
    python -m bench.scale_out --quick    # N = 300, a smoke run
"""

from __future__ import annotations

import argparse

from bench.common import (
    time_warm_batch,
)
from simulator.config import SimConfig
from simulator.embedded import running_simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="N = 300")
    args = parser.parse_args()
    n = 300 if args.quick else args.n
    with running_simulator(SimConfig(latency="0")) as sim:
        one_s, one_stats = time_warm_batch(sim, n, worker_count=1, concurrency=16)
        two_s, two_stats = time_warm_batch(sim, n, worker_count=2, concurrency=16)
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
