"""Figures the dashboard keeps between requests, so that many open pages polling a batch of a
million rows cost the database no more than one: a finished batch's figures are computed
once (until its state changes), a running batch's again only after a pause that grows with
what they cost to compute (``COST_FACTOR`` times, at least ``MIN_AGE_SECONDS``), and by one
thread at a time, so reading them takes no more than a fifth of one connection's time however
many pages are open."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

MIN_AGE_SECONDS = 1.0
COST_FACTOR = 5.0


@dataclass(frozen=True)
class _Entry:
    key: Hashable
    value: Any
    at: float
    cost: float

    def fresh(self, key: Hashable, active: bool, now: float) -> bool:
        """Whether this entry still answers for ``key``: always for a settled batch, for a
        batch being worked until it is older than its cost allows."""
        if key != self.key:
            return False
        return not active or now - self.at < max(MIN_AGE_SECONDS, self.cost * COST_FACTOR)


@dataclass
class FigureCache:
    """Computed figures by name (e.g. ``("status", batch_id)``), each with the key it was
    computed for (the batch's state: a change recomputes it at once). One thread computes a
    name at a time; the others wait for its result rather than compute it again."""

    _entries: dict[Hashable, _Entry] = field(default_factory=dict)
    _computing: dict[Hashable, Lock] = field(default_factory=dict)
    _forgotten: int = 0  # bumped by forget: a computation begun before it is not kept
    _lock: Lock = field(default_factory=Lock)

    def get(self, name: Hashable, key: Hashable, active: bool, compute: Callable[[], Any]) -> Any:
        """The figures for ``name`` at ``key``: kept ones while fresh, else ``compute()``."""
        with self._lock:
            one_at_a_time = self._computing.setdefault(name, Lock())
        with one_at_a_time:
            with self._lock:
                entry, epoch = self._entries.get(name), self._forgotten
            if entry is not None and entry.fresh(key, active, time.monotonic()):
                return entry.value
            started = time.monotonic()
            value = compute()
            done = time.monotonic()
            with self._lock:
                if epoch == self._forgotten:
                    self._entries[name] = _Entry(key, value, done, done - started)
            return value

    def forget(self, batch_id: str) -> None:
        """Drop every figure of one batch (a button changed it), and any being computed."""
        with self._lock:
            self._forgotten += 1
            for name in [n for n in self._entries if isinstance(n, tuple) and batch_id in n]:
                del self._entries[name]
