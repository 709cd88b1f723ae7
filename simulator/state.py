"""The simulator's memory: background tasks, per-key request windows and counters."""

from __future__ import annotations

import statistics
from collections import Counter, deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

REJECTION_KEYS = ("400", "401", "402", "403", "404", "413", "429", "500", "503")
DROP_KEYS = ("dropped", "lost_response")
STATUS_KEYS = ("pending", "running", "succeed", "failed")
RATE_WINDOW_SECONDS = 60.0


@dataclass(slots=True)
class Task:
    """One task: its request, when it was made, when it is ready, and how it ends."""

    id: str
    body: dict[str, Any]
    fingerprint: str
    created_wall: int  # unix seconds, as the API reports it
    # Monotonic seconds of this process, for every age computation (a durable store keeps them
    # as wall-clock seconds and converts, see simulator/store.py).
    created: float
    ready_at: float
    fails: bool
    nul: bool
    fetched: bool = False  # its outcome has been served to a poll at least once
    # Hostile mode: how its polls are answered once it is ready (a ``hostile.PollKind``), fixed
    # when it was accepted so every poll sees the same answer; None: answered normally.
    poll_poison: Any = None
    poison: str | None = None  # the name of the plan that gave ``poll_poison``, to store it

    @property
    def model(self) -> str:
        """The model the request named."""
        return str(self.body["model"])


class Tasks(Protocol):
    """Where the server keeps its tasks: ``TaskStore`` in memory, or ``store.SqliteTaskStore``
    in a file any simulator instance can answer from."""

    def __len__(self) -> int: ...

    def add(self, task: Task) -> None: ...

    def saved(self) -> Awaitable[None] | None: ...

    def get(self, task_id: str) -> Task | None: ...

    def expire(self, now: float, retention: float) -> int: ...

    def note_fetched(self, task: Task) -> None: ...

    def clear(self) -> None: ...

    def close(self) -> None: ...


class TaskStore:
    """Tasks by id, forgotten once older than the retention window, so memory stays bounded."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._by_age: deque[Task] = deque()  # creation order == expiry order

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: Task) -> None:
        """Remember ``task`` until it expires."""
        self._tasks[task.id] = task
        self._by_age.append(task)

    def saved(self) -> Awaitable[None] | None:
        """Nothing to wait for: memory is all there is."""
        return None

    def get(self, task_id: str) -> Task | None:
        """The task with ``task_id``, if still held."""
        return self._tasks.get(task_id)

    def expire(self, now: float, retention: float) -> int:
        """Forget every task created more than ``retention`` seconds before ``now``."""
        expired = 0
        queue = self._by_age
        while queue and now - queue[0].created > retention:
            del self._tasks[queue.popleft().id]
            expired += 1
        return expired

    def note_fetched(self, task: Task) -> None:
        """Nothing to do: ``task.fetched`` is all the memory there is."""

    def clear(self) -> None:
        """Forget everything."""
        self._tasks.clear()
        self._by_age.clear()

    def close(self) -> None:
        """Nothing to release."""


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


class RateWindow:
    """Accepted POST times per API key over a sliding 60-second window."""

    def __init__(self) -> None:
        self._times: dict[str, deque[float]] = {}

    def wait_seconds(self, key: str, rpm: int, now: float) -> float:
        """0 when ``key`` may be accepted now, else the seconds until a slot frees."""
        window = self._times.get(key)
        if window is None:
            return 0.0
        while window and window[0] <= now - RATE_WINDOW_SECONDS:
            window.popleft()
        if len(window) < rpm:
            return 0.0
        return window[-rpm] + RATE_WINDOW_SECONDS - now

    def record(self, key: str, now: float, rpm: int) -> None:
        """Count one accepted POST for ``key``; only the newest ``rpm`` times matter."""
        window = self._times.setdefault(key, deque())
        window.append(now)
        while len(window) > rpm:
            window.popleft()


@dataclass
class Stats:
    """Counters the tests and benchmarks read through ``GET /_sim/stats``."""

    posts: int = 0
    gets: int = 0
    accepted: int = 0
    sync_completions: int = 0
    completed_results_served: int = 0
    expired: int = 0
    accepted_by_fingerprint: Counter[str] = field(default_factory=Counter)
    # Synchronous completions generated (so billed) per request, whether or not the answer
    # reached the client: a request served twice was sent twice.
    served_by_fingerprint: Counter[str] = field(default_factory=Counter)
    # Seconds synchronous requests were held open in all, and from the first one's arrival to
    # the last one's answer: their ratio is how many the client kept in flight on average.
    sync_held_seconds: float = 0.0
    sync_window: tuple[float, float] | None = None
    # Per finished task, seconds from creation to ready, and from ready to the first poll that
    # saw the outcome: what polling efficiency is measured by.
    completion_times: list[float] = field(default_factory=list)
    fetch_delays: list[float] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    statuses_served: Counter[str] = field(default_factory=Counter)
    # Hostile mode: the kind (or "script:MARKER") each poisoned request met.
    poisoned_by_fingerprint: dict[str, str] = field(default_factory=dict)
    # Per task whose completed result was served, the usage of its first serving, as sent; the
    # integer fields of those whose usage was honest are summed in ``usage_totals``.
    usage_served: dict[str, Any] = field(default_factory=dict)
    usage_poisoned: set[str] = field(default_factory=set)
    usage_totals: Counter[str] = field(default_factory=Counter)

    def snapshot(self, live_tasks: int) -> dict[str, Any]:
        """A JSON-ready copy; the listed rejection and status keys are always present."""
        by_fingerprint = dict(self.accepted_by_fingerprint)
        return {
            "posts": self.posts,
            "gets": self.gets,
            "accepted": self.accepted,
            "sync_completions": self.sync_completions,
            "accepted_by_fingerprint": by_fingerprint,
            "duplicate_fingerprints": sorted(fp for fp, n in by_fingerprint.items() if n > 1),
            "served_by_fingerprint": dict(self.served_by_fingerprint),
            "sync_held_seconds": self.sync_held_seconds,
            "sync_span_seconds": self.sync_window[1] - self.sync_window[0]
            if self.sync_window
            else 0.0,
            "rejected": {**dict.fromkeys(REJECTION_KEYS + DROP_KEYS, 0), **self.rejected},
            "statuses_served": {**dict.fromkeys(STATUS_KEYS, 0), **self.statuses_served},
            "completed_results_served": self.completed_results_served,
            "tasks": live_tasks,
            "expired": self.expired,
            "fetched": len(self.fetch_delays),
            "median_completion_seconds": _median(self.completion_times),
            "median_fetch_delay_seconds": _median(self.fetch_delays),
            "poisoned_by_fingerprint": dict(self.poisoned_by_fingerprint),
            "usage_served_totals": dict(self.usage_totals),
            "usage_served_tasks": len(self.usage_served),
        }

    def record_sync(self, arrived: float, answered: float) -> None:
        """Note a synchronous request held open from ``arrived`` to ``answered``."""
        self.sync_held_seconds += answered - arrived
        first, last = self.sync_window or (arrived, answered)
        self.sync_window = (min(first, arrived), max(last, answered))

    def record_fetch(self, task: Task, now: float) -> None:
        """Note the first time a poll sees ``task``'s outcome."""
        if not task.fetched:
            task.fetched = True
            self.completion_times.append(task.ready_at - task.created)
            self.fetch_delays.append(now - task.ready_at)

    def record_usage(self, task_id: str, usage: Any, *, honest: bool = True) -> None:
        """Note the usage of a task's first served result; later servings change nothing, so
        a test can compare what was billed with what was served once per task."""
        if task_id in self.usage_served:
            return
        self.usage_served[task_id] = usage
        if not honest:
            self.usage_poisoned.add(task_id)
            return
        for name, value in _usage_numbers(usage):
            self.usage_totals[name] += value


def _usage_numbers(usage: Any, prefix: str = "") -> list[tuple[str, int]]:
    """The integer fields of a usage object, nested ones named "outer.inner"."""
    if not isinstance(usage, dict):
        return []
    numbers: list[tuple[str, int]] = []
    for name, value in usage.items():
        if isinstance(value, dict) and not prefix:
            numbers += _usage_numbers(value, f"{name}.")
        elif isinstance(value, int) and not isinstance(value, bool):
            numbers.append((prefix + name, value))
    return numbers


@dataclass
class SimState:
    """Everything the server keeps between requests."""

    tasks: Tasks = field(default_factory=TaskStore)
    stats: Stats = field(default_factory=Stats)
    window: RateWindow = field(default_factory=RateWindow)
    # Fingerprints whose first POST already met a first-POST-only hostile kind.
    poisoned_once: set[str] = field(default_factory=set)

    def snapshot(self) -> dict[str, Any]:
        """The stats endpoint's answer."""
        return self.stats.snapshot(len(self.tasks))

    def record_fetch(self, task: Task, now: float) -> None:
        """Note the first time a poll sees ``task``'s outcome, in the stats and the store."""
        if not task.fetched:
            self.stats.record_fetch(task, now)
            self.tasks.note_fetched(task)

    def reset(self) -> None:
        """Forget every task, zero the counters and empty the rate windows."""
        self.tasks.clear()
        self.stats = Stats()
        self.window = RateWindow()
        self.poisoned_once = set()
