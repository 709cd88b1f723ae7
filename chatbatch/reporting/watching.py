"""The arithmetic and wording of ``chatbatch watch``, free of I/O: throughput over a sliding
window of samples, the ETA it implies, the one-line summary printed when not on a terminal, when
a batch is stalled (work is due and nobody moves it) and what watch says then or on a pause.

A snapshot's text (names, reasons, error codes and messages, which may come from the provider)
is made printable when the snapshot is built, so no view of it can pass an escape sequence on to
the terminal."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from chatbatch.rules.states import ACTIVE_STATUSES, TERMINAL_STATUSES
from chatbatch.untrusted import printable

WINDOW_SECONDS = 10.0
# Work due and untouched this long means nobody works the batch: a live worker or ``process``
# claims due rows within a tick (1 s by default) and recovers lapsed leases as often.
STALL_SECONDS = 30.0
FINISHED_BATCH_STATUSES = ("completed", "cancelled")
PAUSED = "paused"


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

    @property
    def paused(self) -> bool:
        return self.status == PAUSED


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


@dataclass(frozen=True)
class Motion:
    """What changes whenever anyone works the batch: the requests in each state and the claims
    made so far (the sum of the lease tokens: every claim bumps one, a poll's claim too, so a
    worker waiting on slow answers is seen moving even while no request changes state)."""

    counts: tuple[tuple[str, int], ...]
    claims: int

    @classmethod
    def of(cls, counts: Mapping[str, int], claims: int) -> Motion:
        """From counts by state in any order (states with no request left out)."""
        return cls(tuple(sorted((s, n) for s, n in counts.items() if n)), claims)


def untouched_seconds(unmoved_since: datetime, next_due: datetime | None, now: datetime) -> float:
    """How long work has been due with nothing moving: from the later of the last movement
    seen and the moment the earliest active request fell due (a queued request's send time, a
    submitted one's next poll, a submitting one's lease running out); 0 when nothing is due."""
    if next_due is None:
        return 0.0
    return max(0.0, (now - max(unmoved_since, next_due)).total_seconds())


def is_stalled(
    unmoved_since: datetime,
    next_due: datetime | None,
    now: datetime,
    stall_seconds: float = STALL_SECONDS,
) -> bool:
    """Whether work has waited untouched for ``stall_seconds``: nobody seems to work the batch."""
    return untouched_seconds(unmoved_since, next_due, now) >= stall_seconds


class StallWatch:
    """Follows one batch's motion refresh after refresh and says when it is stalled: the
    pure rule (``is_stalled``) fed with the time the motion last changed."""

    def __init__(self, stall_seconds: float = STALL_SECONDS) -> None:
        self.stall_seconds = stall_seconds
        self._motion: Motion | None = None
        self._since: datetime | None = None

    def observe(self, now: datetime, motion: Motion, next_due: datetime | None) -> float | None:
        """Record a refresh; the seconds due work has waited untouched when that makes the batch
        stalled, None otherwise (moving again clears it at once)."""
        if self._since is None or motion != self._motion:
            self._motion, self._since = motion, now
        waited = untouched_seconds(self._since, next_due, now)
        return waited if waited >= self.stall_seconds else None


def stall_hint(name: str, waited: float, *, embedded: bool, broker: bool) -> str:
    """What watch says about a stalled batch: that nobody seems to work it and how to start
    someone, in the words of the set-up (embedded default, a broker, PostgreSQL without one)."""
    head = f"nothing has moved for {format_duration(waited)} although work is due: "
    process = f"`chatbatch process {name}`"
    if broker:
        return head + (
            "no `chatbatch worker` or `chatbatch process` seems to be working this batch. "
            f"Start one: `chatbatch worker` (it takes work from CHATBATCH_BROKER_URL) or {process} "
            "(works this batch in that terminal)"
        )
    if embedded:
        return head + (
            "no `chatbatch process` seems to be working this batch (the embedded default has no "
            f"workers). Start one: {process} (on this machine; it works the batch until it is done)"
        )
    return head + (
        "no `chatbatch process` or worker seems to be working this batch. Start one: "
        f"{process} (anywhere that reaches this database) or `chatbatch worker` "
        "(with CHATBATCH_BROKER_URL set)"
    )


def pause_message(snapshot: Snapshot) -> str:
    """Why watch stopped on a paused batch and what to do (the reason is printable already)."""
    reason = (snapshot.pause_reason or "no reason recorded").rstrip(". ")
    return (
        f"{snapshot.name} is paused: {reason}. Fix the cause, then "
        f"`chatbatch resume {snapshot.name}` (and `chatbatch process {snapshot.name}` where no "
        "worker runs)"
    )
