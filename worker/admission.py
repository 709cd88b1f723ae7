"""Ask the rate limiter before claiming, so a claimed submission is one that goes out at once;
tell it afterwards how the POSTs fared; and keep what a process holds as ``submitting`` within
its HTTP concurrency.

A row is marked ``submitting`` only for a POST the limiter already let through: a worker lost
while waiting on the limiter leaves nothing behind, and ``possible_duplicates`` counts only
POSTs that may really have left the process. Models the limiter holds back are remembered until
it may grant again, so the engine neither asks for them in a busy loop nor lets their due rows
hide other models'.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence

from chatbatch.rules.outcomes import Accepted, Completed, Outcome, Retryable
from worker.ratelimit import RateLimiter

ADMIT_SECONDS = 2.0  # longest one chunk waits for the limiter before claiming without it
MIN_HOLD_SECONDS = 0.2


class Admission:
    """Grants per model from the limiter, which models it is holding back, and the feedback
    on what was sent."""

    def __init__(self, limiter: RateLimiter, *, wait_seconds: float = ADMIT_SECONDS) -> None:
        self._limiter = limiter
        self._wait = wait_seconds
        self._held_until: dict[str, float] = {}  # model -> monotonic time to ask again
        self._lock = threading.Lock()

    def held_models(self) -> list[str]:
        """The models to pass over for now."""
        now = time.monotonic()
        with self._lock:
            for model in [m for m, until in self._held_until.items() if until <= now]:
                del self._held_until[model]
            return list(self._held_until)

    def seconds_held(self) -> float | None:
        """How long until the first held model may be asked again (None: none is held)."""
        with self._lock:
            until = min(self._held_until.values(), default=None)
        return None if until is None else max(0.0, until - time.monotonic())

    def reserve(self, due: Counter[str], slots: int) -> dict[str, int]:
        """How many submissions of each due model may go now, at most ``slots`` in all, the
        most common model first, waiting at most ``wait_seconds`` in all."""
        deadline = time.monotonic() + self._wait
        granted: dict[str, int] = {}
        for model, count in due.most_common():
            wanted = min(count, slots - sum(granted.values()))
            if wanted <= 0:
                break
            got = self._acquire(model, wanted, deadline)
            if got:
                granted[model] = got
            if got < wanted:
                self._hold(model)
        return granted

    def release_unclaimed(self, granted: Mapping[str, int], claimed: Collection[str]) -> None:
        """Give back the grants no row was claimed for (another worker was faster); ``claimed``
        holds the model of each claimed row."""
        counts = Counter(claimed)
        for model, count in granted.items():
            if count > counts[model]:
                self._limiter.release(model, count - counts[model])

    def report(self, models: Sequence[str], outcomes: Sequence[Outcome]) -> None:
        """Hand back concurrency slots and report acceptances and 429s, per model, of POSTs
        (``models``: each POST's model; ``outcomes``: its outcome)."""
        sent: Counter[str] = Counter()
        accepted: Counter[str] = Counter()
        refused: dict[str, float | None] = {}
        for model, outcome in zip(models, outcomes, strict=True):
            sent[model] += 1
            if isinstance(outcome, Accepted | Completed):
                accepted[model] += 1
            elif isinstance(outcome, Retryable) and outcome.rate_limited:
                retry_after = refused.get(model)
                if outcome.retry_after is not None:
                    retry_after = max(retry_after or 0.0, outcome.retry_after)
                refused[model] = retry_after
        for model, count in sent.items():
            self._limiter.release(model, count)
            if accepted[model]:
                self._limiter.on_accepted(model, accepted[model])
        for model, retry_after in refused.items():
            self._limiter.on_rate_limited(model, retry_after)

    def _acquire(self, model: str, wanted: int, deadline: float) -> int:
        """Up to ``wanted`` grants for ``model``, asking again after partial grants until
        ``deadline``."""
        got = 0
        while got < wanted:
            left = max(0.0, deadline - time.monotonic())
            more = self._limiter.acquire(model, wanted - got, max_wait=left)
            if more == 0:
                break
            got += more
        return got

    def _hold(self, model: str) -> None:
        """Pass over ``model`` until the limiter may grant it again (at least a moment)."""
        wait = max(self._limiter.retry_in(model), MIN_HOLD_SECONDS)
        with self._lock:
            self._held_until[model] = time.monotonic() + wait


class SubmitBudget:
    """How many more rows this process may hold as ``submitting``: at most its HTTP concurrency,
    across all its task threads, so a worker lost mid-chunk leaves at most that many possible
    duplicates."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._freed = threading.Condition()

    def take(self, wanted: int) -> int:
        """Up to ``wanted`` slots, as many as are free."""
        with self._freed:
            granted = min(wanted, self._free)
            self._free -= granted
            return granted

    def give_back(self, count: int) -> None:
        """Free ``count`` slots taken before."""
        if count <= 0:
            return
        with self._freed:
            self._free += count
            self._freed.notify_all()

    @property
    def free(self) -> int:
        """Slots free now."""
        with self._freed:
            return self._free

    def wait_free(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a free slot; whether there is one."""
        with self._freed:
            return self._freed.wait_for(lambda: self._free > 0, timeout=max(0.0, timeout))
