"""Benchmark 1 — engine overhead: one ``chatbatch worker`` against a bare asyncio + aiohttp loop.

Both do the same work against the same zero-latency simulator at the same concurrency: for each
request one background POST, then GETs until the result is there. The baseline keeps nothing;
chatbatch also claims, records and stores every step in PostgreSQL. Prints wall times, items/s,
GETs per result and the ratio chatbatch / baseline (target ≤ 2.0, and ≥ 300 items/s), then the
plans of the two claim queries on a 1,000,000-row table (``bench.claim_plans``).

    python -m bench.engine_overhead            # N = 5000
    python -m bench.engine_overhead --quick    # N = 300, a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp

from bench.claim_plans import print_claim_plans
from bench.common import (
    chat_body,
    time_warm_batch,
)
from simulator.config import SimConfig
from simulator.embedded import SimulatorHandle, running_simulator


async def _baseline(base_url: str, n: int, concurrency: int) -> int:
    """POST + GET-until-done for ``n`` requests, ``concurrency`` at a time; returns GETs made."""
    headers = {"Authorization": "Bearer sk-simulator"}
    gets = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal gets
        body = {**chat_body(i), "background": True}
        async with session.post(f"{base_url}/chat/completions", json=body) as resp:
            task_id = (await resp.json())["id"]
        while True:
            gets += 1
            async with session.get(f"{base_url}/chat/{task_id}") as resp:
                answer = await resp.read()
            if b'"succeed"' in answer:
                return

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            await one(session, queue.get_nowait())

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return gets


def measure_baseline(sim: SimulatorHandle, n: int, concurrency: int) -> tuple[float, int]:
    sim.reset()
    started = time.monotonic()
    gets = asyncio.run(_baseline(sim.base_url, n, concurrency))
    return time.monotonic() - started, gets


def measure_chatbatch(sim: SimulatorHandle, n: int, concurrency: int) -> tuple[float, int]:
    """One warm worker: seconds from ``load`` to every request succeeded, and GETs made."""
    seconds, stats = time_warm_batch(sim, n, worker_count=1, concurrency=concurrency)
    return seconds, stats["gets"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="N = 300")
    args = parser.parse_args()
    n = 300 if args.quick else args.n
    with running_simulator(SimConfig(latency="0")) as sim:
        base_s, base_gets = measure_baseline(sim, n, args.concurrency)
        ours_s, our_gets = measure_chatbatch(sim, n, args.concurrency)
    print(f"engine overhead: N={n}, concurrency {args.concurrency}, simulator latency 0")
    print(
        f"  baseline (asyncio+aiohttp, no DB)  {base_s:7.2f} s  {n / base_s:8.0f} items/s  "
        f"{base_gets / n:.2f} GETs/result"
    )
    print(
        f"  chatbatch worker (1 process)       {ours_s:7.2f} s  {n / ours_s:8.0f} items/s  "
        f"{our_gets / n:.2f} GETs/result"
    )
    print(f"  ratio chatbatch / baseline         {ours_s / base_s:7.2f}   (target <= 2.0)")
    print_claim_plans(20_000 if args.quick else 1_000_000)


if __name__ == "__main__":
    main()
