"""Benchmark 1 — engine overhead: one ``chatbatch worker`` against a bare asyncio + aiohttp loop,
in background mode and in sync mode.

Both do the same work against the same zero-latency simulator at the same concurrency. In
background mode each request is one background POST, then GETs until the result is there; in
sync mode (``CHATBATCH_API_MODE=sync``) one plain POST whose answer is the result. The baseline
keeps nothing; chatbatch also claims, records and stores every step in PostgreSQL. Prints wall
times, items/s, GETs per result and the ratio chatbatch / baseline for each mode (target ≤ 2.0,
and ≥ 300 items/s), the ratio of chatbatch's sync to its background time, then the plans of the
two claim queries on a 1,000,000-row table (``bench.claim_plans``).

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

MODES = ("background", "sync")


async def _baseline(base_url: str, n: int, concurrency: int, mode: str) -> int:
    """``n`` requests, ``concurrency`` at a time, in ``mode``: POST + GET-until-done
    (background) or one POST (sync); returns GETs made."""
    headers = {"Authorization": "Bearer sk-simulator"}
    gets = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal gets
        if mode == "sync":
            async with session.post(f"{base_url}/chat/completions", json=chat_body(i)) as resp:
                await resp.read()
            return
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


def measure_baseline(
    sim: SimulatorHandle, n: int, concurrency: int, mode: str
) -> tuple[float, int]:
    sim.reset()
    started = time.monotonic()
    gets = asyncio.run(_baseline(sim.base_url, n, concurrency, mode))
    return time.monotonic() - started, gets


def measure_chatbatch(
    sim: SimulatorHandle, n: int, concurrency: int, mode: str
) -> tuple[float, int]:
    """One warm worker: seconds from ``load`` to every request succeeded, and GETs made."""
    seconds, stats = time_warm_batch(
        sim, n, worker_count=1, concurrency=concurrency, CHATBATCH_API_MODE=mode
    )
    return seconds, stats["gets"]


def report(mode: str, n: int, base: tuple[float, int], ours: tuple[float, int]) -> None:
    """The lines of one mode: baseline, chatbatch, their ratio."""
    (base_s, base_gets), (ours_s, our_gets) = base, ours
    print(f"  {mode} mode")
    print(
        f"    baseline (asyncio+aiohttp, no DB)  {base_s:7.2f} s  {n / base_s:8.0f} items/s  "
        f"{base_gets / n:.2f} GETs/result"
    )
    print(
        f"    chatbatch worker (1 process)       {ours_s:7.2f} s  {n / ours_s:8.0f} items/s  "
        f"{our_gets / n:.2f} GETs/result"
    )
    print(f"    ratio chatbatch / baseline         {ours_s / base_s:7.2f}   (target <= 2.0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="N = 300")
    args = parser.parse_args()
    n = 300 if args.quick else args.n
    figures = {}
    with running_simulator(SimConfig(latency="0")) as sim:
        for mode in MODES:
            base = measure_baseline(sim, n, args.concurrency, mode)
            figures[mode] = (base, measure_chatbatch(sim, n, args.concurrency, mode))
    print(f"engine overhead: N={n}, concurrency {args.concurrency}, simulator latency 0")
    for mode, (base, ours) in figures.items():
        report(mode, n, base, ours)
    sync_s, background_s = figures["sync"][1][0], figures["background"][1][0]
    print(f"  chatbatch sync / background time     {sync_s / background_s:7.2f}   (< 1: faster)")
    print_claim_plans(20_000 if args.quick else 1_000_000)


if __name__ == "__main__":
    main()
