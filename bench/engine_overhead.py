"""Benchmark 1 — engine overhead: one ``chatbatch worker`` against a bare asyncio + aiohttp loop.

Both do the same work against the same zero-latency simulator at the same concurrency: for each
request one background POST, then GETs until the result is there. The baseline keeps nothing;
chatbatch also claims, records and stores every step in PostgreSQL. Prints wall times, items/s,
GETs per result and the ratio chatbatch / baseline (target ≤ 2.0, and ≥ 300 items/s).

    python -m bench.engine_overhead            # N = 5000
    python -m bench.engine_overhead --quick    # N = 300, a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import (
    chat_body,
    environment,
    fresh_database,
    run_cli,
    wait_all_finished,
    workers,
    write_prompts,
)
from simulator.config import SimConfig
from simulator.testing import SimulatorHandle, running_simulator


async def _baseline(base_url: str, n: int, concurrency: int) -> int:
    """POST + GET-until-done for ``n`` requests, ``concurrency`` at a time; returns GETs made."""
    headers = {"Authorization": "Bearer sk-sim"}
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
    """From the moment ``load`` returns until every request succeeded, with the worker already
    running (warmed up on a one-request batch), as in a deployment."""
    with fresh_database() as url, tempfile.TemporaryDirectory() as tmp:
        env = environment(url, sim.base_url, CHATBATCH_CONCURRENCY=str(concurrency))
        warmup = write_prompts(Path(tmp) / "warmup.jsonl", 1)
        prompts = write_prompts(Path(tmp) / "prompts.jsonl", n)
        with workers(env, count=1, concurrency=concurrency, log_dir=Path(tmp)):
            run_cli("load", str(warmup), "--name", "warmup", env=env)
            wait_all_finished(url, 1)
            sim.reset()
            run_cli("load", str(prompts), "--name", "bench", env=env)
            started = time.monotonic()
            finished = wait_all_finished(url, n + 1)
    return finished - started, sim.stats()["gets"]


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


if __name__ == "__main__":
    main()
