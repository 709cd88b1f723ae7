"""Keeps capped batches (``--max-cost``) within their cap while claiming submissions.

Summing a batch's spend reads all its answers, so it is done at most once a second, as a
snapshot: in flight F0 (read first), then spent S0, and the batch's ``capped_claims`` C0. Every
request answered since was in flight then or claimed since, so at any later claim

    spent + in flight <= S0 + per_request * (F0 + capped_claims - C0)

which needs only the batch row. Claims lock the capped batches' rows, so workers claiming for
the same capped batch take turns and each sees the others' claims. The statements are in
``chatbatch.operations.cost_caps``; this module keeps only the per-process snapshots.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from chatbatch.operations import cost_caps

REFRESH_SECONDS = 1.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Snapshot:
    """A capped batch's spend, what it had in flight and its claim count, at ``taken_at``."""

    cap: cost_caps.CapState
    in_flight: int
    claims: int
    taken_at: float


class CostGuard:
    """Per-process snapshots of capped batches' spend; one instance per engine."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listed_at = float("-inf")
        self._capped: list[str] = []
        self._snapshots: dict[str, _Snapshot] = {}

    def limits(self, conn: Connection) -> dict[str, int] | None:
        """How many requests each capped running batch may still submit (None: no batch is
        capped, claim freely). Pauses a capped batch that has nothing in flight and may submit
        nothing more."""
        capped = self._capped_batches(conn)
        if not capped:
            return None
        limits = {}
        for row in cost_caps.lock_capped(conn, capped):
            snapshot = self._snapshot(conn, row, fresh=False)
            allowed = _allowance(snapshot, row.capped_claims)
            if allowed == 0:  # the bound may be stale: decide on fresh figures
                snapshot = self._snapshot(conn, row, fresh=True)
                allowed = _allowance(snapshot, row.capped_claims)
                # Answers still outstanding may leave room (estimates run high): pause only
                # once nothing is in flight and not one more request fits.
                if allowed == 0 and snapshot.in_flight == 0 and cost_caps.has_queued(conn, row.id):
                    reason = cost_caps.pause_at_cap(conn, snapshot.cap)
                    if reason:
                        log.warning("batch %s paused: %s", row.id, reason)
            limits[row.id] = allowed
        return limits

    def _capped_batches(self, conn: Connection) -> list[str]:
        """The running batches with a cap, listed at most once every ``REFRESH_SECONDS``."""
        now = time.monotonic()
        with self._lock:
            if now - self._listed_at < REFRESH_SECONDS:
                return self._capped
            self._listed_at = now
        capped = [row.id for row in cost_caps.capped_batches(conn)]
        with self._lock:
            self._capped = capped
        return capped

    def _snapshot(self, conn: Connection, row: Any, *, fresh: bool) -> _Snapshot:
        """The batch's snapshot, taken again when older than ``REFRESH_SECONDS`` or ``fresh``."""
        batch_id: str = row.id
        now = time.monotonic()
        with self._lock:
            known = self._snapshots.get(batch_id)
        if known and not fresh and now - known.taken_at < REFRESH_SECONDS:
            return known
        flying = cost_caps.in_flight(conn, batch_id)  # before the spend: see the module doc
        snapshot = _Snapshot(cost_caps.read_cap(conn, row), flying, row.capped_claims, now)
        with self._lock:
            self._snapshots[batch_id] = snapshot
        return snapshot


def _allowance(snapshot: _Snapshot, claims_now: int) -> int:
    """What may still be claimed: everything in flight at the snapshot or claimed since counts
    as spent at the per-request estimate."""
    committed = snapshot.in_flight + max(0, claims_now - snapshot.claims)
    return cost_caps.allowance(snapshot.cap, committed)
