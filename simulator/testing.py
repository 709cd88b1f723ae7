"""Run the simulator in a background thread (tests, benchmarks, ``run --simulate``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aiohttp import web

from simulator.config import SimConfig
from simulator.server import PREFIX, Simulator, start

T = TypeVar("T")


class SimulatorHandle:
    """A running simulator: its base URL, its counters, and live reconfiguration."""

    def __init__(self, loop: asyncio.AbstractEventLoop, simulator: Simulator, port: int) -> None:
        self._loop = loop
        self._simulator = simulator
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}{PREFIX}"

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def stats(self) -> dict[str, Any]:
        """The same object as ``GET /_sim/stats``."""

        async def snapshot() -> dict[str, Any]:
            return self._simulator.state.stats.snapshot()

        return self._call(snapshot())

    def reconfigure(self, **changes: Any) -> None:
        """Change SimConfig fields while the server runs."""

        async def apply() -> None:
            self._simulator.reconfigure(changes)

        self._call(apply())

    def reset(self) -> None:
        """Forget every task and zero the counters."""

        async def clear() -> None:
            self._simulator.state.reset()

        self._call(clear())


@contextmanager
def running_simulator(config: SimConfig | None = None) -> Iterator[SimulatorHandle]:
    """Serve on a free 127.0.0.1 port in a daemon thread; shut down cleanly on exit."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            runner, simulator, port = loop.run_until_complete(
                start(config or SimConfig(), "127.0.0.1", 0)
            )
            box.update(runner=runner, simulator=simulator, port=port)
        except BaseException as exc:  # report start-up failures to the caller
            box["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="chatbatch-simulator", daemon=True)
    thread.start()
    ready.wait(timeout=30)
    if "error" in box:
        loop.close()
        raise box["error"]
    try:
        yield SimulatorHandle(loop, box["simulator"], box["port"])
    finally:
        runner: web.AppRunner = box["runner"]
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
