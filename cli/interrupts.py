"""Ctrl-C and SIGTERM for commands that work a batch: the first stops cleanly, the second at once.

A clean stop claims nothing more, lets the calls in flight land and be recorded, and hands every
claimed row that was never sent back to the queue, so nothing is left ambiguous. Only a second
signal exits at once and may leave rows for their lease to hand on.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class CleanStop:
    """While active, the first SIGINT/SIGTERM calls ``on_first`` (which must only ask for a
    stop: it runs in a signal handler), a second raises KeyboardInterrupt."""

    def __init__(self, on_first: Callable[[], None]) -> None:
        self._on_first = on_first
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> CleanStop:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._on_first()
