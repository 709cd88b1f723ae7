"""The simulator in a background thread of this process: ``run --simulate`` and ``process
--simulate`` serve from it, and the tests and benchmarks start it the same way."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from simulator.config import SimConfig
from simulator.hostile import ReplySource, Script, check_marker
from simulator.server import PREFIX, Simulator, simulator_of, start

T = TypeVar("T")
START_TIMEOUT = 30.0
CALL_TIMEOUT = 10.0


class SimulatorHandle:
    """A running simulator: its address, its counters, and live reconfiguration."""

    def __init__(self, loop: asyncio.AbstractEventLoop, simulator: Simulator, port: int) -> None:
        self._loop = loop
        self._simulator = simulator
        self.port = port
        self.root_url = f"http://127.0.0.1:{port}"
        self.base_url = self.root_url + PREFIX

    def _on_loop(self, action: Callable[[], T]) -> T:
        """Run ``action`` on the server's loop, so it never races a request handler."""

        async def call() -> T:
            return action()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=CALL_TIMEOUT)

    @property
    def config(self) -> SimConfig:
        """The live configuration."""
        return self._on_loop(lambda: self._simulator.config)

    def stats(self) -> dict[str, Any]:
        """The same object as ``GET /_sim/stats``."""
        return self._on_loop(self._simulator.state.snapshot)

    def reconfigure(self, **changes: Any) -> None:
        """Change SimConfig fields while the server runs (ValueError on bad ones)."""
        self._on_loop(lambda: self._simulator.reconfigure(changes))

    def reset(self) -> None:
        """Forget every task and zero the counters (the configuration and scripts stay)."""
        self._on_loop(self._simulator.state.reset)

    def script(
        self, marker: str, *, post: ReplySource | None = None, poll: ReplySource | None = None
    ) -> None:
        """Script the answers to background requests whose last user message holds
        ``[[script:<marker>]]`` (only while ``hostile`` is on; replaces an earlier script).

        ``post`` answers their POST and ``poll`` every poll of their task once it is ready
        (before that: pending/running as usual). Each is a ``Reply(status, headers, body)`` or a
        callable ``(task_id, key) -> Reply``, called on the simulator's thread for every answer,
        so it can embed the real task id or echo the caller's bare API key; it must not block.
        A 2xx ``post`` still creates the task, bills it and counts it as accepted (the provider
        may have taken it): only what the client sees is scripted. Any other status creates
        nothing and is counted under ``rejected``. Scripted polls are not counted as served
        results (``usage_served``): what their bodies mean is the script's to know.
        """
        name = check_marker(marker)
        if post is None and poll is None:
            raise ValueError("script() needs post=, poll= or both")
        script = Script(post=post, poll=poll)
        self._on_loop(lambda: self._simulator.scripts.__setitem__(name, script))

    def unscript(self, marker: str) -> None:
        """Forget the script of ``marker`` (its marker then gets a 400, like an unknown one)."""
        self._on_loop(lambda: self._simulator.scripts.pop(marker.strip(), None))

    def usage_served(self) -> dict[str, Any]:
        """Per task whose completed result was served, the usage of its first serving as sent
        (the raw JSON numbers, poisoned ones included)."""
        return self._on_loop(lambda: dict(self._simulator.state.stats.usage_served))


@dataclass
class _Started:
    """What the server thread hands back once it is listening (or failed to)."""

    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    simulator: Simulator | None = None
    port: int = 0
    error: BaseException | None = None


@contextmanager
def running_simulator(
    config: SimConfig | None = None,
    *,
    store: Path | None = None,
    shutdown_timeout: float = 1.0,
) -> Iterator[SimulatorHandle]:
    """Serve on a free 127.0.0.1 port in a daemon thread with its own loop; stop cleanly on exit.

    Without ``store`` the tasks live in memory and die with the simulator. With it they are kept
    in that SQLite file as well (made if missing; ValueError if it is another kind of database),
    so a simulator given the same file later, or at the same time in another process, answers
    them exactly as this one would: same content, usage and wall-clock status timeline.
    """
    started = _Started()
    ready = threading.Event()

    async def serve() -> None:
        try:
            runner, port = await start(
                config or SimConfig(),
                "127.0.0.1",
                0,
                shutdown_timeout=shutdown_timeout,
                store=store,
            )
        except BaseException as exc:
            started.error = exc
            ready.set()
            return
        started.loop = asyncio.get_running_loop()
        started.stop = asyncio.Event()
        started.simulator = simulator_of(runner)
        started.port = port
        ready.set()
        try:
            await started.stop.wait()
        finally:
            await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="sim", daemon=True)
    thread.start()
    if not ready.wait(timeout=START_TIMEOUT):
        raise RuntimeError("the simulator did not start listening in time")
    if started.error is not None:
        thread.join()
        raise started.error
    assert started.loop is not None and started.stop is not None and started.simulator is not None
    try:
        yield SimulatorHandle(started.loop, started.simulator, started.port)
    finally:
        started.loop.call_soon_threadsafe(started.stop.set)
        thread.join(timeout=shutdown_timeout + START_TIMEOUT)
