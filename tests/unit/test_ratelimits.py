"""Rate limits: the setting and the /models listing, and the pacing and AIMD maths on a fake clock
(including against a model of the simulator's sliding 60-second window)."""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import replace

import pytest

from chatbatch.rules.ratelimits import (
    ModelLimit,
    ModelState,
    Tuning,
    accepted,
    burst_size,
    grant,
    limit_for,
    limits_from_models_listing,
    parse_duration,
    parse_limits,
    rate_limited,
    read_rpm,
    wait_from_ratelimit_headers,
)
from worker.ratelimit import LocalRateLimiter

T = Tuning()


# --- the setting ---------------------------------------------------------------------------------


def test_parse_limits_reads_every_form() -> None:
    text = "gpt-4o-mini=500/32, deepseek-chat=60 ,\n qwen/qwen-2.5=/8, slow=0.5, *=1000"
    assert parse_limits(text) == {
        "gpt-4o-mini": ModelLimit(rpm=500, concurrency=32),
        "deepseek-chat": ModelLimit(rpm=60, concurrency=None),
        "qwen/qwen-2.5": ModelLimit(rpm=None, concurrency=8),
        "slow": ModelLimit(rpm=0.5),
        "*": ModelLimit(rpm=1000),
    }
    assert parse_limits("") == {} and parse_limits(" , ,\n") == {}


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("=500", "=500"),
        ("a=", "a="),
        ("a=0", "a=0"),
        ("a=-5", "a=-5"),
        ("a=fast", "a=fast"),
        ("a=nan", "a=nan"),
        ("a=inf", "a=inf"),
        ("ok=5, a=5/0", "a=5/0"),
        ("a=5/x", "a=5/x"),
        ("a=5/2.5", "a=5/2.5"),
        ("a=5=3", "a=5=3"),
        ("a=5, a=6", "a=6"),
    ],
)
def test_parse_limits_names_the_bad_entry(text: str, bad: str) -> None:
    with pytest.raises(ValueError, match="CHATBATCH_RATE_LIMITS") as info:
        parse_limits(text)
    assert repr(bad) in str(info.value)


def test_models_listing_gives_rpm_and_skips_junk() -> None:
    payload = {
        "object": "list",
        "data": [
            {"id": "gpt-4o-mini", "limitations": {"max_requests_per_min": 500}},
            {"id": "deepseek-chat", "limitations": {"max_requests_per_min": "60"}},
            {"id": "no-limit", "limitations": {}},
            {"id": "zero", "limitations": {"max_requests_per_min": 0}},
            {"id": "bool", "limitations": {"max_requests_per_min": True}},
            {"id": "junk", "limitations": {"max_requests_per_min": "lots"}},
            {"id": "none", "limitations": None},
            {"limitations": {"max_requests_per_min": 5}},
            "not an object",
        ],
    }
    assert limits_from_models_listing(payload) == {
        "gpt-4o-mini": ModelLimit(rpm=500),
        "deepseek-chat": ModelLimit(rpm=60),
    }
    assert limits_from_models_listing({}) == {} and limits_from_models_listing([]) == {}


def test_limit_for_uses_the_wildcard_and_the_tighter_of_configured_and_published() -> None:
    configured = {"a": ModelLimit(rpm=100, concurrency=4), "*": ModelLimit(rpm=1000)}
    published = {"a": ModelLimit(rpm=50), "b": ModelLimit(rpm=5000), "c": ModelLimit(rpm=10)}
    assert limit_for("a", configured, published) == ModelLimit(rpm=50, concurrency=4)
    assert limit_for("b", configured, published) == ModelLimit(rpm=1000)
    assert limit_for("c", {}, published) == ModelLimit(rpm=10)
    assert limit_for("d", {}, published).unlimited


def test_openai_style_headers_give_a_wait_only_when_nothing_is_left() -> None:
    exhausted = {"X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Requests": "1m30s"}
    assert wait_from_ratelimit_headers(exhausted) == 90
    assert wait_from_ratelimit_headers({**exhausted, "X-RateLimit-Remaining-Requests": "3"}) is None
    assert wait_from_ratelimit_headers({}) is None
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("6m0s") == 360 and parse_duration("7") == 7
    assert parse_duration("soon") is None and parse_duration("5x") is None


# --- pacing --------------------------------------------------------------------------------------


def drive(
    state: ModelState,
    ceiling: float | None,
    seconds: float,
    step: float,
    want: int,
    start: float = 0.0,
):
    """Ask for ``want`` every ``step`` seconds for ``seconds`` from ``start``; the grant times."""
    times: list[float] = []
    now = start
    while now < start + seconds:
        state, granted, _ = grant(state, now, want, ceiling, T)
        times += [now] * granted
        now = round(now + step, 9)
    return state, times


def test_a_known_limit_is_paced_smoothly_below_it_with_a_small_burst() -> None:
    _, times = drive(ModelState(), 600, seconds=300, step=0.01, want=50)
    burst = burst_size(600 * 0.97, T)
    assert burst == 8
    assert times[: int(burst)] == [0.0] * int(burst)  # the burst, then one every 60/582 s
    assert max(times.count(t) for t in set(times[int(burst) :])) == 1
    assert len(times) == pytest.approx(burst + 582 * 5, abs=2)
    # any sliding 60-second window (what the provider counts) stays below the limit
    worst = max(_window_counts(times, 60.0))
    assert 582 <= worst <= 600 * (1 - T.headroom / 2)


def _window_counts(times: list[float], width: float):
    window: deque[float] = deque()
    for t in times:
        window.append(t)
        while window[0] <= t - width:
            window.popleft()
        yield len(window)


def test_a_zero_grant_says_when_the_next_one_is_possible() -> None:
    state, granted, wait = grant(ModelState(), 0.0, 100, 60, T)
    assert granted == 1  # 60 rpm: a burst of one
    state, granted, wait = grant(state, 0.2, 100, 60, T)
    assert granted == 0 and wait == pytest.approx(60 / (60 * 0.97) - 0.2)
    _, granted, _ = grant(state, 0.2 + wait, 100, 60, T)
    assert granted == 1


def test_no_known_limit_and_no_429_means_no_limiting_but_the_rate_is_measured() -> None:
    state, times = drive(ModelState(), None, seconds=20, step=0.1, want=64)
    assert len(times) == 64 * 200
    assert state.tat == 0 and state.learned is None
    assert 64 * 600 * 0.9 < _read_sent(state, 20.0) < 64 * 600 * 1.1


def _read_sent(state: ModelState, now: float) -> float:
    return read_rpm(state.sent, now, T)


def test_retry_after_blocks_every_grant_until_it_has_passed() -> None:
    state = rate_limited(ModelState(), 10.0, 5.0, 600, T)
    state, granted, wait = grant(state, 12.0, 10, 600, T)
    assert granted == 0 and wait == pytest.approx(3.0)
    assert grant(state, 15.0, 10, 600, T)[1] > 0


# --- AIMD ----------------------------------------------------------------------------------------


def test_a_429_cuts_to_a_share_of_the_accepted_rate() -> None:
    state = ModelState()
    for second in range(30):  # the provider accepts 300 rpm of the 582 we send
        state = grant(state, float(second), 5, 600, T)[0]
        state = accepted(state, float(second), 5, 600, T)
    state = rate_limited(state, 30.0, None, 600, T)
    assert state.learned == pytest.approx(0.9 * 300, rel=0.1)
    assert state.before_cut == pytest.approx(582)


def test_with_nothing_accepted_the_cut_is_multiplicative_from_the_measured_rate() -> None:
    state, _ = drive(ModelState(), None, seconds=10, step=0.1, want=10)  # 6000 rpm
    state = rate_limited(state, 10.0, None, None, T)
    assert state.learned == pytest.approx(6000 * T.decrease, rel=0.1)


def test_one_cut_per_congestion_episode() -> None:
    state = grant(ModelState(), 0.0, 8, 600, T)[0]
    state = accepted(state, 10.0, 10, 600, T)
    state = rate_limited(state, 11.0, None, 600, T)
    first = state.learned
    assert first is not None
    # the rest of the in-flight answers, and later 429s with nothing accepted in between
    for now in (11.01, 11.5, 15.0, 30.0):
        state = rate_limited(state, now, None, 600, T)
    assert state.learned == first
    state = accepted(state, 30.5, 1, 600, T)
    state = rate_limited(state, 31.0, None, 600, T)
    assert state.learned is not None and state.learned < first
    # ... but within the cooldown an accepted answer does not open a new episode
    state = accepted(state, 31.5, 1, 600, T)
    assert rate_limited(state, 32.0, None, 600, T).learned == state.learned


def test_429s_before_the_traffic_has_lasted_one_averaging_window_only_hold_back() -> None:
    """The first chunk's answers say little about the provider: a cut from that trickle would
    set the floor (half the rate before the first cut) far below what it accepts."""
    state = grant(ModelState(), 0.0, 16, None, T)[0]
    state = rate_limited(accepted(state, 0.3, 15, None, T), 0.3, None, None, T)
    assert state.learned is None and state.blocked_until == pytest.approx(0.8)
    state, _ = drive(state, None, seconds=9.5, step=0.1, want=10, start=0.5)  # 6000 rpm
    state = rate_limited(accepted(state, 10.0, 1, None, T), 10.0, None, None, T)
    assert state.learned == pytest.approx(6000 * T.decrease, rel=0.1)


def test_after_an_idle_spell_the_rates_are_measured_afresh() -> None:
    state, _ = drive(ModelState(), None, seconds=20, step=0.1, want=10)  # 6000 rpm
    state = grant(state, 300.0, 16, None, T)[0]  # a new batch, minutes later
    assert state.sent[2] == 300.0
    assert rate_limited(state, 300.3, None, None, T).learned is None
    state, _ = drive(state, None, seconds=10, step=0.1, want=10, start=300.5)
    assert rate_limited(state, 310.5, None, None, T).learned == pytest.approx(3000, rel=0.1)


def test_without_retry_after_the_pause_doubles_until_something_is_accepted() -> None:
    state = ModelState(accepted_since_cut=False)
    pauses = []
    now = 0.0
    for _ in range(8):
        state = rate_limited(state, now, None, 600, T)
        pauses.append(state.blocked_until - now)
        in_flight = rate_limited(state, now + 0.01, None, 600, T)  # counted, no escalation
        assert replace(in_flight, refused=state.refused) == state
        now = state.blocked_until
    assert pauses == [0.5, 1, 2, 4, 8, 16, 30, 30]
    state = accepted(state, now, 1, 600, T)
    assert rate_limited(state, now, None, 600, T).blocked_until == now + 0.5


def test_the_learned_rate_climbs_back_linearly_and_is_dropped_at_the_limit() -> None:
    state = ModelState(learned=300.0, before_cut=600.0, last_cut=0.0)
    now, minutes = 0.0, 0.0
    while state.learned is not None:  # the provider accepts everything we send
        state, granted, wait = grant(state, now, 1, 1000, T)
        state = accepted(state, now, granted, 1000, T)
        now += max(wait, 1e-3)
        minutes = now / 60
        assert state.learned is None or state.learned < 970
    # +25 % of 600 per minute from 300 to 600, then +25 % of the rate itself up to 970
    assert 3 < minutes < 5
    assert grant(state, now + 1, 1000, 1000, T)[1] >= 14  # paced at the limit again


def test_random_429s_slow_the_rate_down_but_never_to_nothing() -> None:
    """A provider refusing 8 % of submissions at random, whatever the rate (shared capacity, as
    in the chaos test): cuts keep coming, but the rate stays above the floor."""
    rng = random.Random(5)
    state = accepted(ModelState(), 0.0, 1, None, T)
    now, rates = 0.0, []
    while now < 600:
        state, granted, wait = grant(state, now, 1, None, T)
        if granted:
            if rng.random() < 0.08:
                state = rate_limited(state, now, None, None, T)
            else:
                state = accepted(state, now, granted, None, T)
        now += max(wait, 0.01)
        if state.learned is not None:
            rates.append(state.learned)
    assert rates and min(rates) >= T.floor_share * state.before_cut - 1e-9
    assert state.before_cut > 0 and rates[-1] >= T.floor_share * state.before_cut


@pytest.mark.parametrize("seed", range(5))
def test_random_429s_from_the_first_request_do_not_set_a_floor_from_the_first_second(
    seed: int,
) -> None:
    """3 % refused at random from the start, 6,000 rpm wanted: the best rate before a cut (whose
    half is the floor) is measured over a whole averaging window of traffic. Cut from the first
    second's trickle, seeds 1 and 3 set it at 628 and 440 rpm, and ran at a fifth of the rate."""
    rng = random.Random(seed)
    state, now = ModelState(), 0.0
    while now < 120:
        state, granted, wait = grant(state, now, 1, None, T)
        if granted and rng.random() < 0.03:
            state = rate_limited(state, now, None, None, T)
        elif granted:
            state = accepted(state, now, granted, None, T)
        now += max(wait, 0.01)
    assert state.before_cut >= 1000


def test_a_learned_rate_is_never_above_the_known_limit() -> None:
    state = ModelState(learned=5000.0, before_cut=9000.0)
    state, granted, _ = grant(state, 0.0, 1000, 600, T)
    assert granted == burst_size(582, T)
    assert accepted(state, 0.0, 1, 600, T).learned is None  # above the limit: dropped


# --- against a model of the simulator ------------------------------------------------------------


def simulate_sliding_window(
    rpm: int, *, ceiling: float | None, retry_after: bool, minutes: int = 6
) -> tuple[float, float]:
    """Greedy senders (32 wanted every 10 ms) against a provider that accepts at most ``rpm`` in
    any sliding 60 s window, as simulator/state.py does; (accepted per minute after the first
    two minutes / rpm, fraction of all POSTs answered 429 after the first two minutes)."""
    state, window = ModelState(), deque[float]()
    accepted_late = refused_late = 0
    now = 0.0
    while now < minutes * 60:
        state, granted, _ = grant(state, now, 32, ceiling, T)
        for _ in range(granted):
            while window and window[0] <= now - 60:
                window.popleft()
            late = now >= 120
            if len(window) < rpm:
                window.append(now)
                accepted_late += late
                state = accepted(state, now, 1, ceiling, T)
            else:
                refused_late += late
                wait = max(1, math.ceil(window[-rpm] + 60 - now)) if retry_after else None
                state = rate_limited(state, now, wait, ceiling, T)
        now = round(now + 0.01, 6)
    steady_minutes = minutes - 2
    total = accepted_late + refused_late
    return accepted_late / steady_minutes / rpm, refused_late / max(1, total)


def test_a_known_limit_meets_the_target_without_a_single_429() -> None:
    throughput, refused = simulate_sliding_window(600, ceiling=600, retry_after=True)
    assert throughput >= 0.95 and refused == 0


def test_an_unknown_limit_with_retry_after_is_learned() -> None:
    throughput, refused = simulate_sliding_window(600, ceiling=None, retry_after=True)
    assert throughput >= 0.95 and refused < 0.02


def test_an_unknown_limit_without_retry_after_does_not_collapse() -> None:
    throughput, refused = simulate_sliding_window(600, ceiling=None, retry_after=False)
    assert throughput >= 0.7 and refused < 0.25


def simulate_token_bucket(rpm: int, *, minutes: int = 4) -> tuple[float, float, float]:
    """Greedy senders (32 wanted every 10 ms) against a quota nobody published, counted as
    llmock counts it: a bucket of ``rpm`` requests, full at the start, refilled at rpm / 60 a
    second, a 429 saying the whole seconds until a request fits. (Accepted per minute after
    the first / rpm, the share of POSTs answered 429 then, and the learned rate / rpm.)"""
    state, tokens, now = ModelState(), float(rpm), 0.0
    accepted_late = refused_late = 0
    while now < minutes * 60:
        tokens = min(rpm, tokens + rpm / 60 * 0.01)
        state, granted, _ = grant(state, now, 32, None, T)
        for _ in range(granted):
            late = now >= 60
            if tokens >= 1:
                tokens -= 1
                accepted_late += late
                state = accepted(state, now, 1, None, T)
            else:
                refused_late += late
                wait = math.ceil((1 - tokens) * 60 / rpm)
                state = rate_limited(state, now, wait, None, T)
        now = round(now + 0.01, 6)
    learned = (state.learned or math.inf) / rpm
    total = accepted_late + refused_late
    return accepted_late / (minutes - 1) / rpm, refused_late / max(1, total), learned


@pytest.mark.parametrize("rpm", [30, 100, 1000])
def test_a_hidden_quota_is_learned_within_a_minute(rpm: int) -> None:
    """The opening burst is accepted (the bucket is full) and reads as thousands of rpm; half
    of it used to be a floor the rate never went below, so 9 POSTs in 10 were refused for good
    (100 rpm: learned 1,161, 2,578 answers of 429 for 400 requests)."""
    throughput, refused, learned = simulate_token_bucket(rpm)
    assert refused < 0.05 and throughput >= 0.85 and learned < 1.2


def test_random_refusals_below_the_quota_share_keep_the_floor() -> None:
    """Refusals at random, a fifth of all POSTs whatever the rate: no quota to follow down."""
    rng = random.Random(7)
    state, now = ModelState(), 0.0
    while now < 300:
        state, granted, wait = grant(state, now, 4, None, T)
        for _ in range(granted):
            if rng.random() < 0.2:
                state = rate_limited(state, now, None, None, T)
            else:
                state = accepted(state, now, 1, None, T)
        now += max(wait, 0.01)
    assert state.learned is not None and state.before_cut > 0
    assert state.learned >= T.floor_share * state.before_cut - 1e-9


# --- the in-process limiter ----------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_local_limiter_waits_up_to_max_wait_then_gives_up() -> None:
    fake = FakeTime()
    limiter = LocalRateLimiter(limits={"m": ModelLimit(rpm=60)}, clock=fake.clock, sleep=fake.sleep)
    assert limiter.acquire("m", 5, max_wait=0) == 1
    assert limiter.acquire("m", 5, max_wait=0.5) == 0 and fake.slept == []
    assert limiter.retry_in("m") == pytest.approx(60 / 58.2)
    assert limiter.acquire("m", 5, max_wait=2) == 1 and fake.slept == [pytest.approx(60 / 58.2)]
    assert limiter.acquire("other", 500, max_wait=0) == 500  # no limit at all


def test_local_limiter_concurrency_and_reported_outcomes() -> None:
    fake = FakeTime()
    limits = {"m": ModelLimit(rpm=None, concurrency=3)}
    limiter = LocalRateLimiter(limits=limits, clock=fake.clock, sleep=fake.sleep)
    assert limiter.acquire("m", 5, max_wait=0) == 3
    assert limiter.acquire("m", 5, max_wait=0.2) == 0 and len(fake.slept) == 4  # polled
    limiter.release("m", 2)
    assert limiter.acquire("m", 5, max_wait=0) == 2
    limiter.on_accepted("m", 4)
    fake.now += T.average_seconds  # a measured rate to cut from
    limiter.on_rate_limited("m", 3.0)
    state = limiter.state("m")
    assert state.blocked_until == pytest.approx(fake.now + 3.0)
    assert state.learned is not None and state.admitted[0] > 0  # the acceptances were counted
    limiter.release("m", 5)
    assert limiter.acquire("m", 1, max_wait=1) == 0
    assert limiter.retry_in("m") == pytest.approx(3.0)


def test_acceptances_reported_while_every_slot_is_taken_are_counted() -> None:
    fake = FakeTime()
    limiter = LocalRateLimiter(limits={"m": ModelLimit(concurrency=1)}, clock=fake.clock)
    assert limiter.acquire("m", 1, max_wait=0) == 1
    limiter.on_rate_limited("m", None)
    limiter.on_accepted("m", 1)
    fake.now += 1.0
    assert limiter.acquire("m", 1, max_wait=0) == 0  # the one slot is still taken
    assert limiter.state("m").strikes == 0 and limiter.state("m").admitted[0] > 0


def test_tuning_rejects_impossible_fractions() -> None:
    with pytest.raises(ValueError, match="decrease"):
        Tuning(decrease=1.5)
    assert replace(T, headroom=0.1).headroom == 0.1
