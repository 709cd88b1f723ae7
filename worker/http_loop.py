"""One asyncio event loop per worker process, in a daemon thread, that runs every HTTP call.

The engine and Celery's task threads stay synchronous (SQLAlchemy, psycopg); they hand a chunk's
HTTP calls to this loop and block until all are answered. One loop means one connection pool
and one in-flight cap for the whole process, and no thread per request.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """An event loop running forever in its own thread until ``close()``."""

    def __init__(self, name: str = "chatbatch-http") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the loop (callable from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the loop's thread soon (callable from any other thread)."""
        self._loop.call_soon_threadsafe(callback)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (callable from any other thread)."""
        return self.submit(coro).result()

    def close(self) -> None:
        """Stop the loop and join its thread; idempotent."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
