"""The Lua limiter (``worker/ratelimit.lua``) against its specification, the Python maths
(``LocalRateLimiter`` over ``chatbatch.rules.ratelimits``): the same events at the same instants
must give the same grants, the same waits and the same stored state, learned rates included.

Time is fixed, so nothing here depends on how busy the machine is: the scripts' ``clock()`` is
replaced by one reading the instant from a key the test sets, and ``LocalRateLimiter`` reads
the same instant. One test checks the shipped clock (Redis's) on its own. Every test has a key
prefix of its own and deletes its keys afterwards.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbatch.rules.ratelimits import ModelLimit, ModelState, Tuning, grant, rate_limited
from worker.ratelimit import LocalRateLimiter, RedisRateLimiter

START = 31_536_000.0  # a year after the limiter's epoch, as Redis's clock would read
# Slots expire only in Redis (a dead worker's); far beyond any sequence here, so both agree.
TUNINGS = [
    Tuning(slot_ttl=100_000.0),
    Tuning(slot_ttl=100_000.0, cooldown=1.0, pause=0.1, pause_max=2.0, average_seconds=2.0),
]
FIXED_CLOCK = """
local function clock() return tonumber(redis.call('GET', KEYS[1] .. ':now')) end
"""
WAIT_TOLERANCE = 2e-6  # the script returns waits with six decimals


@dataclass(frozen=True)
class Acquire:
    """Ask for ``count`` submissions, not waiting."""

    model: str
    count: int


@dataclass(frozen=True)
class Answer:
    """Answers to ``sent`` granted POSTs, ``accepted`` of them accepted (as the engine reports
    them: released, then the acceptances)."""

    model: str
    sent: int
    accepted: int


@dataclass(frozen=True)
class Refused:
    """A 429, with or without Retry-After."""

    model: str
    retry_after: float | None


@dataclass(frozen=True)
class Publish:
    """The provider's published limits."""

    limits: tuple[tuple[str, ModelLimit], ...]


@dataclass(frozen=True)
class Wait:
    """Time passes."""

    seconds: float


Event = Acquire | Answer | Refused | Publish | Wait


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _never_sleep(seconds: float) -> None:
    """The twins are only asked with ``max_wait=0``: neither may ever sleep."""
    raise AssertionError(f"a limiter asked with max_wait=0 slept {seconds} s")


class Twins:
    """The Redis limiter and the in-process one, given the same events at the same instants."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        limits: Mapping[str, ModelLimit],
        tuning: Tuning,
    ) -> None:
        self.now = START
        self.client = client
        self.redis = RedisRateLimiter(
            client,
            limits=limits,
            prefix=prefix,
            tuning=tuning,
            sleep=_never_sleep,
            lua_clock=FIXED_CLOCK,
        )
        self.local = LocalRateLimiter(
            limits=limits, tuning=tuning, clock=lambda: self.now, sleep=_never_sleep
        )
        self.outstanding: Counter[str] = Counter()  # granted POSTs not yet answered

    def apply(self, event: Event) -> None:
        """Give both limiters ``event``, then check that they agree."""
        match event:
            case Acquire(model, count):
                self._acquire(model, count)
            case Answer(model, sent, accepted):
                self._answer(model, sent, accepted)
            case Refused(model, retry_after):
                self._tick(model)
                self.redis.on_rate_limited(model, retry_after)
                self.local.on_rate_limited(model, retry_after)
                self.check_state(model)
            case Publish(limits):
                self.redis.set_published(dict(limits))
                self.local.set_published(dict(limits))
            case Wait(seconds):
                self.now += seconds

    def _acquire(self, model: str, count: int) -> None:
        self._tick(model)
        granted = self.redis.acquire(model, count, max_wait=0)
        assert granted == self.local.acquire(model, count, max_wait=0), self.now
        wait = self.local.retry_in(model)
        assert self.redis.retry_in(model) == pytest.approx(wait, abs=WAIT_TOLERANCE)
        self.outstanding[model] += granted
        self.check_state(model)

    def _answer(self, model: str, sent: int, accepted: int) -> None:
        sent = min(sent, self.outstanding[model])
        accepted = min(accepted, sent)
        if not sent:
            return
        self.outstanding[model] -= sent
        for limiter in (self.redis, self.local):
            limiter.release(model, sent)
            limiter.on_accepted(model, accepted)

    def _tick(self, model: str) -> None:
        """Set the scripts' clock for ``model`` to the test's instant."""
        self.client.set(self.redis.keys(model)[0] + ":now", repr(self.now))

    def check_state(self, model: str) -> None:
        """The state Redis stores for ``model`` is the in-process limiter's, field by field."""
        assert_same_state(
            stored_state(self.client, self.redis.keys(model)[0]), self.local.state(model)
        )


def stored_state(client: redis.Redis, key: str) -> ModelState:
    """Every field of a model's state hash, as the Python maths keeps it."""
    stored: dict[Any, Any] = client.hgetall(key)  # type: ignore[assignment]
    raw = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in stored.items()}
    if not raw:
        return ModelState()
    return ModelState(
        tat=raw.get("tat", 0.0),
        blocked_until=raw.get("blk", 0.0),
        learned=raw.get("lrn"),
        before_cut=raw.get("bc", 0.0),
        last_cut=-math.inf if raw.get("lc", -1e300) <= -1e300 else raw["lc"],
        accepted_since_cut=raw.get("asc", 1.0) == 1.0,
        strikes=int(raw.get("stk", 0)),
        sent=(raw.get("sv", 0.0), raw.get("sat", 0.0), raw.get("ssn")),
        admitted=(raw.get("av", 0.0), raw.get("aat", 0.0), raw.get("asn")),
        refused=(raw.get("rv", 0.0), raw.get("rat", 0.0), raw.get("rsn")),
    )


def assert_same_state(redis_state: ModelState, local_state: ModelState) -> None:
    """Equal, but for the last bits of ``exp`` (Redis's C library may round differently)."""
    for field in fields(ModelState):
        theirs, mine = getattr(redis_state, field.name), getattr(local_state, field.name)
        assert _close(theirs, mine), f"{field.name}: Redis {theirs!r}, Python {mine!r}"


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float | int) and not isinstance(b, bool):
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def run(
    client: redis.Redis,
    events: Sequence[Event],
    limits: Mapping[str, ModelLimit],
    tuning: Tuning = TUNINGS[0],
) -> Twins:
    """Run ``events`` through a fresh pair of limiters, checking agreement after each."""
    prefix = f"chatbatch-test-rla-{uuid.uuid4().hex[:10]}"
    twins = Twins(client, prefix, limits, tuning)
    try:
        for event in events:
            twins.apply(event)
    finally:
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
    return twins


# --- scripted scenarios, one per behaviour ------------------------------------------------------


def test_paced_grants_and_waits_agree(client: redis.Redis) -> None:
    steps: list[Event] = [Acquire("m", 40)]
    steps += [event for _ in range(30) for event in (Wait(0.037), Acquire("m", 3))]
    run(client, steps, {"m": ModelLimit(rpm=6000)})


def test_retry_after_and_pauses_without_it_agree(client: redis.Redis) -> None:
    steps: list[Event] = [Acquire("m", 5), Refused("m", 2.5), Acquire("m", 1), Wait(1.0)]
    steps += [Acquire("m", 1), Wait(1.6), Acquire("m", 2), Answer("m", 2, 0)]
    steps += [Refused("m", None), Acquire("m", 1), Wait(0.6), Refused("m", None)]
    steps += [Wait(0.2), Acquire("m", 1), Wait(1.0), Refused("m", math.inf), Wait(400.0)]
    steps += [Refused("m", math.nan), Acquire("m", 1), Refused("m", 0.0)]
    run(client, steps, {"m": ModelLimit(rpm=600)})


def test_learned_rates_fall_and_climb_back_alike(client: redis.Redis) -> None:
    steps: list[Event] = []
    for second in range(40):
        steps += [Acquire("m", 20), Answer("m", 20, 18), Wait(0.5)]
        if second % 7 == 3:
            steps += [Refused("m", None), Wait(0.6)]
    steps += [Wait(12.0), Refused("m", 1.0), Wait(2.0), Acquire("m", 50), Answer("m", 50, 50)]
    run(client, steps, {"m": ModelLimit(rpm=3000)})
    run(client, steps, {}, TUNINGS[1])  # no known limit: the first cut is from the grant rate


def test_a_hidden_quota_is_learned_alike(client: redis.Redis) -> None:
    """Most POSTs refused (a quota nobody published): the cut follows what is admitted."""
    steps: list[Event] = []
    for _ in range(12):  # 20 a second sent, 2 admitted: the grant rate reads 1,200 rpm
        steps += [Acquire("m", 20), Answer("m", 20, 2)]
        steps += [Refused("m", 1.0) for _ in range(18)] + [Wait(1.0)]
    twins = run(client, steps, {})
    learned = twins.local.state("m").learned
    assert learned is not None and learned < 300  # not the floor: half of 1,200 rpm


def test_published_limits_tighten_alike(client: redis.Redis) -> None:
    steps: list[Event] = [Acquire("m", 10), Wait(1.0)]
    steps += [Publish((("m", ModelLimit(rpm=120)),)), Acquire("m", 10), Wait(0.3)]
    steps += [Acquire("m", 10), Publish(()), Acquire("m", 10), Acquire("other", 7)]
    run(client, steps, {"*": ModelLimit(rpm=6000)})


def test_concurrency_caps_agree(client: redis.Redis) -> None:
    steps: list[Event] = [Acquire("m", 10), Acquire("m", 1), Answer("m", 2, 2)]
    steps += [Acquire("m", 5), Wait(0.01), Answer("m", 4, 3), Acquire("m", 6)]
    steps += [Publish((("m", ModelLimit(concurrency=2)),)), Answer("m", 3, 3), Acquire("m", 4)]
    run(client, steps, {"m": ModelLimit(rpm=6000, concurrency=4)})


def test_acceptances_reported_while_every_slot_is_taken_count_alike(
    client: redis.Redis,
) -> None:
    """Once the one disagreement the generated sequences found: the in-process limiter dropped
    acceptances carried by an ask it refused for want of a concurrency slot."""
    steps: list[Event] = [Acquire("m", 2), Refused("m", None), Wait(1.0), Answer("m", 1, 1)]
    steps += [Publish((("m", ModelLimit(concurrency=1)),))]  # the one slot left is taken
    steps += [Acquire("m", 1)]  # refused for want of a slot; the acceptance still counts
    twins = run(client, steps, {"m": ModelLimit(concurrency=2)})
    assert twins.local.state("m").strikes == 0


# --- generated sequences -------------------------------------------------------------------------

MODELS = st.sampled_from(["a", "b"])
LIMITS = st.builds(
    ModelLimit,
    rpm=st.none() | st.floats(0.5, 12_000) | st.sampled_from([60.0, 600.0, 6000.0]),
    concurrency=st.none() | st.integers(1, 12),
)
SECONDS = st.floats(0, 2) | st.sampled_from([0.0, 1e-7, 0.001, 0.0097, 0.1, 1.0]) | st.floats(2, 45)
ACQUIRE = st.builds(Acquire, MODELS, st.integers(1, 40))
EVENTS = st.one_of(
    ACQUIRE,
    st.builds(Acquire, MODELS, st.integers(1, 8)),  # asking is what the limiters are for
    st.builds(Answer, MODELS, st.integers(1, 40), st.integers(0, 40)),
    st.builds(
        Refused,
        MODELS,
        st.none() | st.floats(0, 400) | st.sampled_from([math.inf, math.nan, 0.0]),
    ),
    st.builds(Publish, st.lists(st.tuples(MODELS, LIMITS), max_size=2).map(tuple)),
    st.builds(Wait, SECONDS),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=st.lists(EVENTS, min_size=10, max_size=80),
    limits=st.dictionaries(st.sampled_from(["a", "b", "*"]), LIMITS, max_size=3),
    tuning=st.sampled_from(TUNINGS),
)
def test_any_sequence_of_events_gives_the_same_grants_waits_and_state(
    client: redis.Redis,
    events: list[Event],
    limits: dict[str, ModelLimit],
    tuning: Tuning,
) -> None:
    run(client, events, limits, tuning)


# --- the shipped clock ---------------------------------------------------------------------------


def test_the_shipped_scripts_run_on_redis_time(client: redis.Redis) -> None:
    """With the real clock, the instant a script used lies between two readings of Redis's
    clock, and the Python maths at that instant gives what the script stored."""
    prefix = f"chatbatch-test-rla-{uuid.uuid4().hex[:10]}"
    tuning = Tuning(average_seconds=0.2)  # a cut needs 0.2 s of traffic, not 10
    limiter = RedisRateLimiter(
        client, prefix=prefix, limits={"m": ModelLimit(rpm=60)}, tuning=tuning
    )
    key = limiter.keys("m")[0]
    try:
        before = limiter.redis_now()
        assert limiter.acquire("m", 1, max_wait=0) == 1
        after = limiter.redis_now()
        state = stored_state(client, key)
        now = state.sent[1]
        assert before <= now <= after
        assert_same_state(state, grant(ModelState(), now, 1, 60.0, tuning)[0])

        time.sleep(0.3)
        before = limiter.redis_now()
        limiter.on_rate_limited("m", 5.0)
        after = limiter.redis_now()
        cut = stored_state(client, key)
        now = cut.last_cut
        assert before <= now <= after
        assert_same_state(cut, rate_limited(replace(state), now, 5.0, 60.0, tuning))
    finally:
        for stale in client.scan_iter(f"{prefix}:*"):
            client.delete(stale)
