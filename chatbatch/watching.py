"""The arithmetic and wording of ``chatbatch watch``, free of I/O: throughput over a sliding
window of samples, the ETA it implies, and the one-line summary printed when not on a terminal.

A snapshot's text (names, reasons, error codes and messages, which may come from the provider)
is made printable when the snapshot is built, so no view of it can pass an escape sequence on to
the terminal."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from chatbatch.states import ACTIVE_STATUSES, TERMINAL_STATUSES
from chatbatch.untrusted import printable

WINDOW_SECONDS = 10.0
FINISHED_BATCH_STATUSES = ("completed", "cancelled")


@dataclass(frozen=True)
class Sample:
    """The number of finished requests seen at one moment (monotonic seconds)."""

    at: float
    finished: int


class ThroughputWindow:
    """Finished requests per second over the last ``window_seconds``, from counts sampled now
    and then. A count that goes down (``chatbatch retry`` requeued rows) starts afresh."""

    def __init__(self, window_seconds: float = WINDOW_SECONDS) -> None:
        self.window_seconds = window_seconds
        self._samples: deque[Sample] = deque()

    def add(self, at: float, finished: int) -> None:
        """Record a sample; keeps one sample at or before the window's start as its anchor."""
        if self._samples and (finished < self._samples[-1].finished or at < self._samples[-1].at):
            self._samples.clear()
        self._samples.append(Sample(at, finished))
        cutoff = at - self.window_seconds
        while len(self._samples) > 2 and self._samples[1].at <= cutoff:
            self._samples.popleft()

    def rate(self) -> float | None:
        """Requests finished per second across the window; None until two samples apart."""
        if len(self._samples) < 2:
            return None
        first, last = self._samples[0], self._samples[-1]
        elapsed = last.at - first.at
        return (last.finished - first.finished) / elapsed if elapsed > 0 else None


def eta_seconds(remaining: int, rate: float | None) -> float | None:
    """Seconds until ``remaining`` requests are done at ``rate``: 0 when none remain, None when
    the rate is unknown or zero (no estimate rather than infinity)."""
    if remaining <= 0:
        return 0.0
    if not rate or rate <= 0:
        return None
    return remaining / rate


@dataclass(frozen=True)
class ErrorLine:
    """One error code of the batch: how many requests carry it and the latest message."""

    code: str
    count: int
    last_message: str | None

    def __post_init__(self) -> None:
        """Code and message come from the provider: printable from here on."""
        _make_printable(self, "code", "last_message")


@dataclass(frozen=True)
class Snapshot:
    """What one refresh of ``watch`` read from the database."""

    name: str
    status: str
    total: int
    counts: dict[str, int]
    pause_reason: str | None = None
    cost: str | None = None
    errors: list[ErrorLine] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Name, pause reason and cost text (model names) may hold outside text: printable from
        here on (each error line sees to its own)."""
        _make_printable(self, "name", "pause_reason", "cost")

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s.value, 0) for s in TERMINAL_STATUSES)

    @property
    def remaining(self) -> int:
        return sum(self.counts.get(s.value, 0) for s in ACTIVE_STATUSES)

    @property
    def done(self) -> bool:
        return self.status in FINISHED_BATCH_STATUSES


def _make_printable(frozen: object, *names: str) -> None:
    """Replace the frozen dataclass's text fields ``names`` by their printable form (None
    stays None): once, where the text enters the view, rather than in every renderer."""
    for name in names:
        value = getattr(frozen, name)
        if value is not None:
            object.__setattr__(frozen, name, printable(value))


def format_duration(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``2h07m``, ``3d04h``; ``–`` when unknown."""
    if seconds is None or math.isnan(seconds):
        return "–"
    whole = max(0, math.ceil(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_rate(rate: float | None) -> str:
    """Requests per second, to a sensible precision; ``–`` before it can be measured."""
    if rate is None:
        return "–"
    return f"{rate:.1f}/s" if rate >= 10 or rate == 0 else f"{rate:.2f}/s"


def plain_line(snapshot: Snapshot, rate: float | None) -> str:
    """The one line per refresh printed when stdout is not a terminal (logs, CI, pipes)."""
    counts = ", ".join(f"{name} {n:,}" for name, n in snapshot.counts.items() if n)
    parts = [
        f"{snapshot.name} {snapshot.status}",
        f"{snapshot.finished:,}/{snapshot.total:,} finished ({counts or 'no requests'})",
    ]
    if not snapshot.done:
        eta = eta_seconds(snapshot.remaining, rate)
        parts.append(f"{format_rate(rate)} · ETA {format_duration(eta)}")
    if snapshot.cost is not None:
        parts.append(f"cost {snapshot.cost}")
    if snapshot.errors:
        parts.append("errors " + ", ".join(f"{e.code} {e.count:,}" for e in snapshot.errors))
    if snapshot.pause_reason:
        parts.append(f"paused: {snapshot.pause_reason}")
    return " · ".join(parts)
