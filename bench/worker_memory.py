"""Worker memory: does one ``chatbatch worker``'s peak RSS stay flat as one batch grows?

For each size N, one batch of N requests runs to completion in a database of its own against a
zero-latency simulator, through one warm ``chatbatch worker`` (16 in flight), exactly as
``bench.engine_overhead`` and ``bench.scale_out`` run it (``bench.common.time_warm_batch``: the
worker is started, warmed up on a one-request batch, then the batch is loaded with
``chatbatch load`` and timed from ``load`` returning to every request finished). The worker is
what users run to work a batch: one process (Celery's threads pool, no forked children), so
its own peak RSS is the figure. While it runs, this process reads ``VmHWM`` (the kernel's
high-water mark of the resident set) and ``VmRSS`` from ``/proc/<pid>/status`` of its child
``chatbatch worker`` a few times a second: Linux only. Prints per size: seconds, items/s, the
worker's peak RSS and its RSS at the end, and the peak's ratio to the first size's, from the same
run (target: flat, about 1.0); each size's line as soon as it is measured.

``requests`` is vacuumed every 20 s while a batch runs, standing in for autovacuum, which this
machine's server runs without (``bench.common.vacuuming`` says what happens otherwise). On the
shared 2-core machine one worker does 150-250 items/s, falling as the table grows, so the default
sizes take about two hours; ``--sizes 100000,500000`` about three quarters of an hour.

    python -m bench.worker_memory                        # N = 100,000 and 1,000,000
    python -m bench.worker_memory --sizes 100000,500000
    python -m bench.worker_memory --quick                # N = 1,000 and 10,000, a smoke run
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import time_warm_batch
from simulator.config import SimConfig
from simulator.embedded import SimulatorHandle, running_simulator

CONCURRENCY = 16
SAMPLE_SECONDS = 0.2
VACUUM_SECONDS = 20  # autovacuum's stand-in (bench.common.vacuuming): this server runs none


@dataclass
class Memory:
    """What was read of the worker processes: peak and last RSS (kB) by pid."""

    peak_kb: dict[int, int] = field(default_factory=dict)
    last_kb: dict[int, int] = field(default_factory=dict)


def worker_pids() -> list[int]:
    """This process's children that run ``chatbatch worker``."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == me and b"worker" in argv[1:3]:
            found.append(int(entry.name))
    return found


def rss_kb(pid: int) -> tuple[int, int] | None:
    """``VmHWM`` and ``VmRSS`` of ``pid`` in kB, or None once it has exited."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    if "VmHWM" not in fields:  # a zombie has no memory left to read
        return None
    return int(fields["VmHWM"].split()[0]), int(fields["VmRSS"].split()[0])


@contextmanager
def watched_workers() -> Iterator[Memory]:
    """Sample the ``chatbatch worker`` children's memory until the block ends."""
    memory, done = Memory(), threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            for pid in worker_pids():
                if (read := rss_kb(pid)) is not None:
                    memory.peak_kb[pid] = max(memory.peak_kb.get(pid, 0), read[0])
                    memory.last_kb[pid] = read[1]

    thread = threading.Thread(target=sample, name="rss", daemon=True)
    thread.start()
    try:
        yield memory
    finally:
        done.set()
        thread.join()


def one_size(sim: SimulatorHandle, n: int) -> tuple[float, int, int]:
    """Seconds for one batch of ``n``, the worker's peak RSS and its last RSS read (MB)."""
    with watched_workers() as memory:
        seconds, stats = time_warm_batch(
            sim, n, worker_count=1, concurrency=CONCURRENCY, vacuum_every=VACUUM_SECONDS
        )
    if len(memory.peak_kb) != 1:
        raise SystemExit(f"expected one worker process, read {len(memory.peak_kb)}")
    if stats["accepted"] != n:
        raise SystemExit(f"the simulator accepted {stats['accepted']} for {n} requests")
    (pid,) = memory.peak_kb
    return seconds, memory.peak_kb[pid] // 1024, memory.last_kb[pid] // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated batch sizes")
    parser.add_argument("--quick", action="store_true", help="sizes 1,000 and 10,000")
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else [int(size) for size in args.sizes.split(",")]
    started, base_peak = time.monotonic(), 0
    print(
        f"worker memory: one batch of N through one chatbatch worker, {CONCURRENCY} in flight, "
        f"simulator latency 0; RSS from /proc/<pid>/status every {SAMPLE_SECONDS} s; "
        f"VACUUM requests every {VACUUM_SECONDS} s",
        flush=True,
    )
    with running_simulator(SimConfig(latency="0")) as sim:
        for n in sizes:
            seconds, peak, last = one_size(sim, n)
            base_peak = base_peak or peak  # the first size's
            print(
                f"  N={n:>11,}  {seconds:8.1f} s  {n / seconds:6.0f} items/s  worker peak RSS "
                f"{peak:5} MB (at the end {last:5} MB)  peak ratio to N={sizes[0]:,} "
                f"{peak / base_peak:5.2f} (target ~1.0)",
                flush=True,
            )
    print(f"  {time.monotonic() - started:.0f} s in all")


if __name__ == "__main__":
    main()
