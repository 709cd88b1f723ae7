"""The simulator's memory: background tasks, per-key request windows and counters."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Task:
    """One background task: when it was made, when it is ready, and how it ends."""

    id: str
    body: dict[str, Any]
    fingerprint: str
    created_wall: int
    created: float
    ready_at: float
    fails: bool
    nul: bool


@dataclass
class Stats:
    """Counters the tests and benchmarks read through ``GET /_sim/stats``."""

    posts: int = 0
    gets: int = 0
    accepted: int = 0
    sync_completions: int = 0
    completed_results_served: int = 0
    accepted_by_fingerprint: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    statuses_served: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        return {
            "posts": self.posts,
            "gets": self.gets,
            "accepted": self.accepted,
            "sync_completions": self.sync_completions,
            "completed_results_served": self.completed_results_served,
            "accepted_by_fingerprint": dict(self.accepted_by_fingerprint),
            "duplicate_fingerprints": sorted(
                fp for fp, n in self.accepted_by_fingerprint.items() if n > 1
            ),
            "rejected": dict(self.rejected),
            "statuses_served": dict(self.statuses_served),
        }


class RateWindow:
    """Accepted POST times per key over a sliding 60-second window."""

    def __init__(self) -> None:
        self._times: dict[str, deque[float]] = {}

    def wait_seconds(self, key: str, rpm: int, now: float) -> float:
        """0 when a request may go now, else the seconds until a slot frees."""
        window = self._times.setdefault(key, deque())
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) < rpm:
            return 0.0
        return window[0] + 60 - now

    def record(self, key: str, now: float) -> None:
        self._times.setdefault(key, deque()).append(now)


@dataclass
class SimState:
    """Everything the server keeps between requests."""

    tasks: dict[str, Task] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)
    window: RateWindow = field(default_factory=RateWindow)

    def reset(self) -> None:
        self.tasks.clear()
        self.stats = Stats()
        self.window = RateWindow()


def monotonic() -> float:
    return time.monotonic()
