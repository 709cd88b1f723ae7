"""Per-model rate limiting before each chunk's POSTs: shared by every worker (Redis) or in one
process (the embedded run). The maths is ``chatbatch.rules.ratelimits``; the Lua below is the same
functions, run atomically inside Redis on Redis's own clock (workers' clocks differ).

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
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
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
        return limit_for(model, self._configured, self._published)

    def acquire(self, model: str, count: int, *, max_wait: float) -> int:
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
        if count > 0:
            with self._lock:
                self._pending[model] = self._pending.get(model, 0) + count

    def retry_in(self, model: str) -> float:
        return self._retry_in.get(model, 0.0)

    def _take_pending(self, model: str) -> int:
        with self._lock:
            return self._pending.pop(model, 0)

    def _try(self, model: str, count: int, limit: ModelLimit) -> tuple[int, float]:
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
        with self._lock:
            now = self._clock()
            state = self._flush(model, now, limit)
            if now < state.blocked_until:
                self._states[model] = state
                return 0, state.blocked_until - now
            if limit.concurrency is not None:
                free = limit.concurrency - self._in_flight.get(model, 0)
                if free <= 0:
                    return 0, self.tuning.concurrency_poll
                count = min(count, free)
            state, granted, wait = grant(state, now, count, limit.rpm, self.tuning)
            self._states[model] = state
            if limit.concurrency is not None:
                self._in_flight[model] = self._in_flight.get(model, 0) + granted
            return granted, wait

    def release(self, model: str, count: int) -> None:
        with self._lock:
            if model in self._in_flight:
                self._in_flight[model] = max(0, self._in_flight[model] - count)

    def on_rate_limited(self, model: str, retry_after: float | None) -> None:
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
    ) -> None:
        super().__init__(limits=limits, tuning=tuning, clock=time.monotonic, sleep=sleep)
        self._redis = client
        self._prefix = prefix
        self._holder = uuid.uuid4().hex[:12]
        self._sequence = 0
        self._leases: dict[str, list[str]] = {}
        self._acquire_script = client.register_script(LUA_COMMON + LUA_ACQUIRE)
        self._limited_script = client.register_script(LUA_COMMON + LUA_RATE_LIMITED)
        self._last_error_log = -ERROR_LOG_SECONDS

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisRateLimiter:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return cls(client, **kwargs)

    def keys(self, model: str) -> list[str]:
        """The model's state hash and slot set (one hash tag: the same Redis Cluster slot)."""
        base = f"{self._prefix}:{{{model}}}"
        return [base, base + ":slots"]

    def _tuning_args(self) -> list[Arg]:
        t = self.tuning
        return [
            *(t.headroom, t.admitted_share, t.decrease, t.increase, t.cooldown, t.pause),
            *(t.pause_max, t.min_rpm, t.average_seconds, t.concurrency_poll, t.slot_ttl),
            *(t.state_ttl, t.floor_share),
        ]

    def _try(self, model: str, count: int, limit: ModelLimit) -> tuple[int, float]:
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
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_SECONDS:
            self._last_error_log = now
            log.warning("rate limiter: Redis failed in %s (%r); not limiting meanwhile", what, exc)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _arg(value: float | None) -> str:
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


# The maths of chatbatch.ratelimits, transcribed; keep the two in step (the integration tests
# run the same scenarios through both). Numbers are stored with %.17g: exact doubles.
LUA_COMMON = """
local function num(v, default) if v then return tonumber(v) end return default end
local function opt(v) if v == '' then return nil end return tonumber(v) end

local function clock()
  local t = redis.call('TIME')
  return (tonumber(t[1]) - EPOCH) + tonumber(t[2]) / 1000000
end

local function tuning(first)
  local names = {'headroom', 'share', 'decrease', 'increase', 'cooldown', 'pause',
                 'pause_max', 'min_rpm', 'tau', 'poll', 'slot_ttl', 'state_ttl', 'floor'}
  local t = {}
  for i, name in ipairs(names) do t[name] = tonumber(ARGV[first + i - 1]) end
  return t
end

local FIELDS = {'tat', 'blk', 'lrn', 'bc', 'lc', 'asc', 'stk',
                'sv', 'sat', 'ssn', 'av', 'aat', 'asn'}

local function load(key)
  local f = redis.call('HMGET', key, unpack(FIELDS))
  return {tat = num(f[1], 0), blk = num(f[2], 0), lrn = num(f[3], nil), bc = num(f[4], 0),
          lc = num(f[5], -1e300), asc = num(f[6], 1), stk = num(f[7], 0),
          sv = num(f[8], 0), sat = num(f[9], 0), ssn = num(f[10], nil),
          av = num(f[11], 0), aat = num(f[12], 0), asn = num(f[13], nil)}
end

local function save(key, s, now, t)
  local args = {}
  for _, name in ipairs(FIELDS) do
    if s[name] ~= nil then
      args[#args + 1] = name
      args[#args + 1] = string.format('%.17g', s[name])
    end
  end
  redis.call('HSET', key, unpack(args))
  if s.lrn == nil then redis.call('HDEL', key, 'lrn') end
  local ttl = math.max(t.state_ttl, s.blk - now + 1)  -- a long Retry-After outlives idleness
  redis.call('PEXPIRE', key, math.ceil(ttl * 1000))
end

local function fold(v, at, since, now, count, t)
  local decayed = v * math.exp(-math.max(0, now - at) / t.tau)
  return decayed + count * 60 / t.tau, now, since or now
end

local function read_rpm(v, at, since, now, t)
  if since == nil then return 0 end
  local decayed = v * math.exp(-math.max(0, now - at) / t.tau)
  return decayed / (1 - math.exp(-math.max(1, now - since) / t.tau))
end

local function cap_of(ceiling, t)
  if ceiling == nil then return nil end
  return ceiling * (1 - t.headroom)
end

local function pace_rpm(s, ceiling, t)
  local cap = cap_of(ceiling, t)
  if s.lrn == nil then return cap end
  if cap == nil then return s.lrn end
  return math.min(s.lrn, cap)
end

local function accepted(s, now, count, ceiling, t)
  if count <= 0 then return end
  s.av, s.aat, s.asn = fold(s.av, s.aat, s.asn, now, count, t)
  s.stk = 0
  s.asc = 1
  if s.lrn == nil then return end
  local per_minute = math.max(s.bc, s.lrn) * t.increase
  local learned = s.lrn + count * per_minute / s.lrn
  local cap = cap_of(ceiling, t)
  if cap ~= nil and learned >= cap then s.lrn = nil else s.lrn = learned end
end
""".replace("EPOCH", str(EPOCH))

# KEYS: state, slots. ARGV: count, ceiling rpm or '', concurrency (0: none), acceptances to
# apply first, holder, first lease number, then the tuning. Returns {granted, wait seconds}.
LUA_ACQUIRE = """
local count, ceiling, concurrency = tonumber(ARGV[1]), opt(ARGV[2]), tonumber(ARGV[3])
local pending, holder, first = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local t = tuning(7)
local now = clock()
local s = load(KEYS[1])
accepted(s, now, pending, ceiling, t)

local function finish(granted, wait)
  save(KEYS[1], s, now, t)
  return {granted, string.format('%.6f', wait)}
end

if now < s.blk then return finish(0, s.blk - now) end
if concurrency > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local free = concurrency - redis.call('ZCARD', KEYS[2])
  if free <= 0 then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return finish(0, math.max(0.001, math.min(t.poll, tonumber(oldest[2]) - now)))
  end
  count = math.min(count, free)
end

local granted = count
local rpm = pace_rpm(s, ceiling, t)
if rpm ~= nil then
  local interval = 60 / rpm
  local burst = math.max(1, math.floor(rpm * t.headroom / 2))
  local tat = math.max(s.tat, now)
  local slack = burst * interval - (tat - now)
  granted = math.max(0, math.min(count, math.floor(slack / interval + 1e-9)))
  if granted == 0 then return finish(0, interval - slack) end
  s.tat = tat + granted * interval
end
s.sv, s.sat, s.ssn = fold(s.sv, s.sat, s.ssn, now, granted, t)
if concurrency > 0 then
  local members = {}
  for i = 0, granted - 1 do
    members[#members + 1] = now + t.slot_ttl
    members[#members + 1] = holder .. ':' .. (first + i)
  end
  redis.call('ZADD', KEYS[2], unpack(members))
  redis.call('PEXPIRE', KEYS[2], math.ceil(t.slot_ttl * 1000) + 1000)
end
return finish(granted, 0)
"""

# KEYS: state. ARGV: Retry-After seconds or '', ceiling rpm or '', acceptances to apply first,
# then the tuning.
LUA_RATE_LIMITED = """
local retry_after, ceiling, pending = opt(ARGV[1]), opt(ARGV[2]), tonumber(ARGV[3])
local t = tuning(4)
local now = clock()
local s = load(KEYS[1])
accepted(s, now, pending, ceiling, t)
if retry_after == nil and now >= s.blk then
  s.blk = now + math.min(t.pause_max, t.pause * 2 ^ s.stk)
  s.stk = s.stk + 1
elseif retry_after ~= nil then
  s.blk = math.max(s.blk, now + retry_after)
end
if now - s.lc >= t.cooldown and s.asc == 1 then
  local current = pace_rpm(s, ceiling, t)
  if current == nil then current = math.max(read_rpm(s.sv, s.sat, s.ssn, now, t), t.min_rpm) end
  local target = read_rpm(s.av, s.aat, s.asn, now, t) * t.share
  if not (target > 0 and target < current) then target = current * t.decrease end
  local peak = math.max(s.bc, current)
  s.lrn = math.max(t.min_rpm, target, peak * t.floor)
  s.bc = peak
  s.lc = now
  s.asc = 0
end
save(KEYS[1], s, now, t)
return 1
"""
