"""Chunks whose calls are still in flight while the engine claims the next ones.

In sync mode a POST stays open while the model generates (seconds to minutes, each its own
length). Waiting for a chunk's slowest answer before claiming more left the other connections
idle: 200 requests at a median of 1 s took 57 s at 16 in flight, against 15 s in background
mode. So there each chunk is called and recorded on a thread of its own, and a submission's
slot goes back as soon as its outcome is written (``SubmitBudget``); the drain claims again as
soon as one is free.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from worker.recording import Chunk


class ChunkPipeline:
    """Runs ``work(chunk)`` for each chunk on a pool thread; a chunk that failed raises its
    error at the next ``reap`` (or ``close``), as a chunk worked in line would have."""

    def __init__(self, work: Callable[[Chunk], None], *, threads: int) -> None:
        self._work = work
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="chatbatch-chunk")
        self._running: set[Future[None]] = set()
        self._lock = threading.Lock()

    def start(self, chunk: Chunk) -> None:
        """Call and record ``chunk`` on a pool thread."""
        future = self._pool.submit(self._work, chunk)
        with self._lock:
            self._running.add(future)

    @property
    def busy(self) -> bool:
        """Whether some chunk is still in flight."""
        with self._lock:
            return any(not future.done() for future in self._running)

    def reap(self) -> None:
        """Forget the chunks that are done; raise the first error one of them ended with."""
        with self._lock:
            done = {future for future in self._running if future.done()}
            self._running -= done
        for future in done:
            future.result()

    def close(self) -> None:
        """Wait for every chunk in flight to be recorded, then raise what failed."""
        self._pool.shutdown(wait=True)
        self.reap()
