"""Per-model rate limiting before each chunk's POSTs: shared by every worker (Redis) or in one
process (the embedded run). The maths is ``chatbatch.rules.ratelimits``; ``ratelimit.lua`` is the
same functions, run atomically inside Redis on Redis's own clock (workers' clocks differ).

Use (the engine, per chunk and model)::

    n = limiter.acquire(model, len(rows), max_wait=1.0)   # 0: put the rows back, no attempt spent
    ... POST n rows; for each answer: limiter.release(model, 1), then
    limiter.on_accepted(model, 1) or, on a 429, limiter.on_rate_limited(model, retry_after)

Cost: one Redis round trip (one EVALSHA) per ``acquire`` call, whatever the count; for a model
with no known limit and no 429 seen it only folds the grant into a rate average. ``release`` is a
round trip only for a model with a concurrency limit; ``on_accepted`` is never one (counts are
carried by the next call); ``on_rate_limited`` is one.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cache
from importlib import resources
from typing import Any, Protocol

import redis

from chatbatch.rules.ratelimits import (
    ModelLimit,
    ModelState,
    Tuning,
    accepted,
    bounded_retry_after,
    grant,
    limit_for,
    rate_limited,
)

log = logging.getLogger("chatbatch.ratelimit")
EPOCH = 1735689600  # 2025-01-01: Redis seconds minus this keep microseconds in a Lua double
ERROR_LOG_SECONDS = 30.0
SECTION = re.compile(r"^-- @section (\w+)\n", re.MULTILINE)  # starts each part of ratelimit.lua
Arg = str | int | float


class RateLimiter(Protocol):
    def set_published(self, published: Mapping[str, ModelLimit]) -> None:
        """The provider's own per-model limits; they tighten the configured ones."""
        ...

    def acquire(self, model: str, count: int, *, max_wait: float) -> int:
        """How many of ``count`` submissions may start now, waiting at most ``max_wait`` seconds
        for at least one; 0 when none can within ``max_wait``."""
        ...

    def release(self, model: str, count: int) -> None:
        """That many granted POSTs have been answered (frees concurrency slots)."""
        ...

    def on_rate_limited(self, model: str, retry_after: float | None) -> None:
        """The provider answered 429 (``retry_after``: its Retry-After in seconds, if any)."""
        ...

    def on_accepted(self, model: str, count: int) -> None:
        """The provider accepted that many submissions."""
        ...

    def retry_in(self, model: str) -> float:
        """After a 0 grant: the seconds until this process last saw a grant becoming possible."""
        ...


class _Limiter:
    """What both limiters share: limits per model, the waiting loop, pending acceptances."""

    def __init__(
        self,
        *,
        limits: Mapping[str, ModelLimit] | None,
        tuning: Tuning | None,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self._configured = dict(limits or {})
        self._published: dict[str, ModelLimit] = {}
        self.tuning = tuning or Tuning()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._retry_in: dict[str, float] = {}

    def set_published(self, published: Mapping[str, ModelLimit]) -> None:
        """The provider's own limits (``limits_from_models_listing``); they tighten the
        configured ones."""
        self._published = dict(published)

    def limit(self, model: str) -> ModelLimit:
        """The limit enforced for ``model``: configured, tightened by what is published."""
        return limit_for(model, self._configured, self._published)

    def acquire(self, model: str, count: int, *, max_wait: float) -> int:
        """See ``RateLimiter.acquire``: ask, and sleep between asks while the wait fits."""
        if count <= 0:
            return 0
        deadline = self._clock() + max(0.0, max_wait)
        limit = self.limit(model)
        while True:
            granted, wait = self._try(model, count, limit)
            if granted:
                self._retry_in.pop(model, None)
                return granted
            remaining = deadline - self._clock()
            if wait > remaining:
                self._retry_in[model] = wait
                return 0
            self._sleep(max(wait, 0.001))

    def on_accepted(self, model: str, count: int) -> None:
        """Note acceptances; the next call for the model carries them (no round trip now)."""
        if count > 0:
            with self._lock:
                self._pending[model] = self._pending.get(model, 0) + count

    def retry_in(self, model: str) -> float:
        """See ``RateLimiter.retry_in``."""
        return self._retry_in.get(model, 0.0)

    def _take_pending(self, model: str) -> int:
        """The acceptances noted since the model's last call, now carried by this one."""
        with self._lock:
            return self._pending.pop(model, 0)

    def _try(self, model: str, count: int, limit: ModelLimit) -> tuple[int, float]:
        """One ask: how many of ``count`` may start now, and if none, the seconds to wait."""
        raise NotImplementedError


class LocalRateLimiter(_Limiter):
    """The same behaviour inside one process, without Redis (the embedded SQLite run)."""

    def __init__(
        self,
        *,
        limits: Mapping[str, ModelLimit] | None = None,
        tuning: Tuning | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(limits=limits, tuning=tuning, clock=clock, sleep=sleep)
        self._states: dict[str, ModelState] = {}
        self._in_flight: dict[str, int] = {}

    def state(self, model: str) -> ModelState:
        """The model's state (for tests and diagnostics)."""
        with self._lock:
            return self._states.get(model, ModelState())

    def _try(self, model: str, count: int, limit: ModelLimit) -> tuple[int, float]:
        """One ask, with the maths of ``chatbatch.rules.ratelimits`` on this process's state."""
        with self._lock:
            now = self._clock()
            state = self._flush(model, now, limit)
            if now < state.blocked_until:
                self._states[model] = state
                return 0, state.blocked_until - now
            if limit.concurrency is not None:
                free = limit.concurrency - self._in_flight.get(model, 0)
                if free <= 0:
                    self._states[model] = state  # the acceptances it carried still count
                    return 0, self.tuning.concurrency_poll
                count = min(count, free)
            state, granted, wait = grant(state, now, count, limit.rpm, self.tuning)
            self._states[model] = state
            if limit.concurrency is not None:
                self._in_flight[model] = self._in_flight.get(model, 0) + granted
            return granted, wait

    def release(self, model: str, count: int) -> None:
        """Free concurrency slots of answered POSTs."""
        with self._lock:
            if model in self._in_flight:
                self._in_flight[model] = max(0, self._in_flight[model] - count)

    def on_rate_limited(self, model: str, retry_after: float | None) -> None:
        """A 429: hold the model back and cut its rate (``rules.ratelimits.rate_limited``)."""
        limit = self.limit(model)
        with self._lock:
            now = self._clock()
            state = self._flush(model, now, limit)
            self._states[model] = rate_limited(state, now, retry_after, limit.rpm, self.tuning)

    def _flush(self, model: str, now: float, limit: ModelLimit) -> ModelState:
        """The model's state with the acceptances reported since the last call applied
        (called with the lock held)."""
        state = self._states.get(model, ModelState())
        pending = self._pending.pop(model, 0)
        return accepted(state, now, pending, limit.rpm, self.tuning) if pending else state


class RedisRateLimiter(_Limiter):
    """Shared by every worker process: one hash per model (GCRA time, Retry-After block, AIMD
    rate, averages) and, for a model with a concurrency limit, a sorted set of slot leases
    scored by their expiry. Both expire when idle, so nothing leaks; a slot held by a worker
    that died is freed ``tuning.slot_ttl`` seconds after it was taken. If Redis fails, grants
    are given (limiting is a courtesy; the engine still handles 429s) and a warning logged."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        limits: Mapping[str, ModelLimit] | None = None,
        prefix: str = "chatbatch:ratelimit",
        tuning: Tuning | None = None,
        sleep: Callable[[float], None] = time.sleep,
        lua_clock: str | None = None,
    ) -> None:
        """``lua_clock`` replaces the scripts' Redis-time ``clock()`` (tests fix time with it)."""
        super().__init__(limits=limits, tuning=tuning, clock=time.monotonic, sleep=sleep)
        self._redis = client
        self._prefix = prefix
        self._holder = uuid.uuid4().hex[:12]
        self._sequence = 0
        self._leases: dict[str, list[str]] = {}
        self._acquire_script = client.register_script(lua_script("acquire", lua_clock))
        self._limited_script = client.register_script(lua_script("rate_limited", lua_clock))
        self._last_error_log = -ERROR_LOG_SECONDS

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisRateLimiter:
        """A limiter on the Redis at ``url``, with short timeouts (it fails open)."""
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return cls(client, **kwargs)

    def keys(self, model: str) -> list[str]:
        """The model's state hash and slot set (one hash tag: the same Redis Cluster slot)."""
        base = f"{self._prefix}:{{{model}}}"
        return [base, base + ":slots"]

    def _tuning_args(self) -> list[Arg]:
        """The tuning as the scripts' last arguments, in the order their ``tuning()`` reads."""
        t = self.tuning
        return [
            *(t.headroom, t.admitted_share, t.decrease, t.increase, t.cooldown, t.pause),
            *(t.pause_max, t.min_rpm, t.average_seconds, t.concurrency_poll, t.slot_ttl),
            *(t.state_ttl, t.floor_share, t.quota_refusals),
        ]

    def _try(self, model: str, count: int, limit: ModelLimit) -> tuple[int, float]:
        """One ask, as one script call on the shared state; every grant if Redis fails."""
        with self._lock:
            first, self._sequence = self._sequence, self._sequence + count
        pending = self._take_pending(model)
        args: list[Arg] = [count, _arg(limit.rpm), limit.concurrency or 0, pending]
        args += [self._holder, first]
        try:
            granted, wait = self._acquire_script(
                keys=self.keys(model), args=[*args, *self._tuning_args()]
            )
        except redis.RedisError as exc:
            self._log_error("acquire", exc)
            return count, 0.0
        granted = int(granted)
        if granted and limit.concurrency:
            ids = [f"{self._holder}:{first + i}" for i in range(granted)]
            with self._lock:
                self._leases.setdefault(model, []).extend(ids)
        return granted, float(wait)

    def release(self, model: str, count: int) -> None:
        """Give back this process's latest slot leases for the model (a round trip only for a
        model with a concurrency limit)."""
        with self._lock:
            held = self._leases.get(model)
            if not held or count <= 0:
                return
            ids, held[-count:] = held[-count:], []
        try:
            self._redis.zrem(self.keys(model)[1], *ids)
        except redis.RedisError as exc:
            self._log_error("release", exc)  # the leases expire on their own

    def on_rate_limited(self, model: str, retry_after: float | None) -> None:
        """A 429, applied to the shared state by one script call."""
        pending = self._take_pending(model)
        retry_after = bounded_retry_after(retry_after, self.tuning)
        args: list[Arg] = [_arg(retry_after), _arg(self.limit(model).rpm), pending]
        try:
            self._limited_script(keys=self.keys(model)[:1], args=[*args, *self._tuning_args()])
        except redis.RedisError as exc:
            self._log_error("on_rate_limited", exc)

    def held(self, model: str) -> int:
        """Slots this process holds for ``model`` (for tests and diagnostics)."""
        with self._lock:
            return len(self._leases.get(model, ()))

    def state(self, model: str) -> ModelState:
        """The model's shared state as stored (for tests and diagnostics)."""
        stored: dict[Any, Any] = self._redis.hgetall(self.keys(model)[0])  # type: ignore[assignment]
        raw = {_text(k): float(v) for k, v in stored.items()}
        return replace(
            ModelState(),
            tat=raw.get("tat", 0.0),
            blocked_until=raw.get("blk", 0.0),
            learned=raw.get("lrn"),
            before_cut=raw.get("bc", 0.0),
            strikes=int(raw.get("stk", 0)),
        )

    def redis_now(self) -> float:
        """Redis's clock on the scripts' scale (for tests and diagnostics)."""
        seconds, micros = self._redis.time()
        return seconds - EPOCH + micros / 1e6

    def _log_error(self, what: str, exc: Exception) -> None:
        """Warn that Redis failed, at most once every ``ERROR_LOG_SECONDS``."""
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_SECONDS:
            self._last_error_log = now
            log.warning("rate limiter: Redis failed in %s (%r); not limiting meanwhile", what, exc)


def _text(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value


def _arg(value: float | None) -> str:
    """An optional number as a script argument ('' for None), exact."""
    return "" if value is None else repr(float(value))


def build_rate_limiter(
    limits: Mapping[str, ModelLimit],
    *,
    redis_url: str | None,
    prefix: str = "chatbatch:ratelimit",
    tuning: Tuning | None = None,
) -> RedisRateLimiter | LocalRateLimiter:
    """The shared limiter when there is a Redis (workers), else the in-process one."""
    if redis_url:
        return RedisRateLimiter.from_url(redis_url, limits=limits, prefix=prefix, tuning=tuning)
    return LocalRateLimiter(limits=limits, tuning=tuning)


def lua_script(name: str, clock: str | None = None) -> str:
    """The script ``name`` (``acquire`` or ``rate_limited``) of ``ratelimit.lua``: its clock,
    the shared functions, then its own section; ``clock`` replaces the clock section."""
    sections = _lua_sections()
    return (clock or sections["clock"]) + sections["common"] + sections[name]


@cache
def _lua_sections() -> dict[str, str]:
    """``ratelimit.lua`` cut at its ``-- @section NAME`` lines (read once per process)."""
    text = resources.files("worker").joinpath("ratelimit.lua").read_text(encoding="utf-8")
    parts = SECTION.split(text)[1:]  # the header, then name and body by turns
    sections = dict(zip(parts[::2], parts[1::2], strict=True))
    sections["clock"] = sections["clock"].replace("EPOCH", str(EPOCH))
    return sections
