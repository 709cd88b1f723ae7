"""The shared rate limiter against a real Redis: two instances act as two workers. Every test has
a key prefix of its own, so parallel runs never collide, and deletes its keys afterwards."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chatbatch.rules.ratelimits import ModelLimit, Tuning, burst_size
from worker.ratelimit import RedisRateLimiter

RPM = 6000.0  # 100 per second: enough grants in a few seconds to count
BURST = 87  # floor(6000 * 0.97 * 0.015)
PACE = RPM * 0.97 / 60  # grants per second


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    prefix = f"chatbatch-test-rl-{uuid.uuid4().hex[:10]}"
    yield prefix
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def pair(client: redis.Redis, prefix: str, **kwargs: Any) -> tuple[RedisRateLimiter, ...]:
    """Two limiters sharing Redis, as two worker processes would."""
    return tuple(RedisRateLimiter(client, prefix=prefix, **kwargs) for _ in range(2))


def hammer(limiter: RedisRateLimiter, model: str, until: float, grants: list[float]) -> None:
    """Ask for chunks of 8 until ``until``; note the time of every grant."""
    while time.monotonic() < until:
        granted = limiter.acquire(model, 8, max_wait=0.05)
        grants.extend([time.monotonic()] * granted)


def test_two_workers_share_one_smooth_pace(client: redis.Redis, prefix: str) -> None:
    a, b = pair(client, prefix, limits={"m": ModelLimit(rpm=RPM)})
    grants: list[float] = []
    start = time.monotonic()
    threads = [
        threading.Thread(target=hammer, args=(w, "m", start + 3.0, grants)) for w in (a, b, a, b)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = max(grants) - start
    assert len(grants) <= BURST + PACE * elapsed + 1
    assert len(grants) >= 0.9 * (BURST + PACE * elapsed)
    # after the burst, every half second gets its share and no more
    steady = sorted(grants)[BURST:]
    for t0 in (start + 0.5, start + 1.0, start + 1.5, start + 2.0):
        count = sum(t0 <= t < t0 + 0.5 for t in steady)
        assert PACE * 0.5 * 0.8 <= count <= PACE * 0.5 + 2


def test_retry_after_blocks_both_workers(client: redis.Redis, prefix: str) -> None:
    a, b = pair(client, prefix)
    assert b.acquire("m", 64, max_wait=0) == 64  # no limit known: everything
    a.on_rate_limited("m", 1.0)
    assert b.acquire("m", 64, max_wait=0.2) == 0
    assert 0.6 < b.retry_in("m") <= 1.0
    started = time.monotonic()
    assert b.acquire("m", 1, max_wait=2.0) == 1
    assert 0.5 < time.monotonic() - started < 1.2


def test_aimd_decrease_is_shared_and_recovers_to_the_limit(
    client: redis.Redis, prefix: str
) -> None:
    # fast, to fit a test: a measured rate to cut from after 0.2 s of traffic
    tuning = Tuning(cooldown=0.0, pause=0.05, increase=20.0, average_seconds=0.2)
    a, b = pair(client, prefix, limits={"m": ModelLimit(rpm=RPM)}, tuning=tuning)
    assert a.acquire("m", 50, max_wait=0) == 50
    a.on_accepted("m", 50)
    time.sleep(0.6)
    a.on_rate_limited("m", None)  # no Retry-After: a short pause and a cut
    cut = b.state("m")
    assert cut.learned is not None and cut.learned <= RPM * 0.97 * tuning.floor_share
    assert cut.strikes == 1 and cut.blocked_until > b.redis_now()
    # worker b now paces at the learned rate
    grants: list[float] = []
    time.sleep(0.1)
    hammer(b, "m", time.monotonic() + 1.0, grants)
    assert len(grants) <= burst_size(cut.learned, tuning) + cut.learned / 60 * 1.1 + 2
    # accepted answers, reported by either worker, raise it back until it is dropped at the limit
    for _ in range(200):
        granted = a.acquire("m", 8, max_wait=0.05)
        a.on_accepted("m", granted)
        b.on_accepted("m", granted)
        if b.state("m").learned is None:
            break
    assert b.state("m").learned is None
    assert b.state("m").strikes == 0


def test_a_dead_workers_concurrency_slots_expire(client: redis.Redis, prefix: str) -> None:
    tuning = Tuning(slot_ttl=0.5)
    dead, alive = pair(client, prefix, limits={"m": ModelLimit(concurrency=3)}, tuning=tuning)
    assert dead.acquire("m", 5, max_wait=0) == 3  # then it is killed: never released
    assert alive.acquire("m", 1, max_wait=0.1) == 0
    assert alive.acquire("m", 5, max_wait=1.0) == 3
    state_key, slots_key = alive.keys("m")
    assert 0 < client.pttl(slots_key) <= 1500 and 0 < client.pttl(state_key) <= 3600_000
    alive.release("m", 3)
    assert client.zcard(slots_key) == 0 and alive.held("m") == 0


def test_threads_of_two_workers_never_exceed_the_concurrency_limit(
    client: redis.Redis, prefix: str
) -> None:
    a, b = pair(client, prefix, limits={"m": ModelLimit(rpm=RPM, concurrency=4)})
    in_flight, worst, total = 0, 0, 0
    lock = threading.Lock()

    def work(limiter: RedisRateLimiter) -> None:
        nonlocal in_flight, worst, total
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            granted = limiter.acquire("m", 2, max_wait=0.1)
            with lock:
                in_flight += granted
                worst = max(worst, in_flight)
                total += granted
            time.sleep(0.005)  # the POST
            with lock:
                in_flight -= granted
            limiter.release("m", granted)

    threads = [threading.Thread(target=work, args=(w,)) for w in (a, b) * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert worst == 4
    assert total <= BURST + PACE * 2.2
    assert client.zcard(a.keys("m")[1]) == 0


def test_a_model_with_no_limit_costs_one_script_call_per_chunk(
    client: redis.Redis, prefix: str
) -> None:
    limiter = RedisRateLimiter(client, prefix=prefix)
    limiter.acquire("free", 1, max_wait=0)  # loads the script
    commands: list[str] = []
    original = client.execute_command

    def counting(*args: Any, **kwargs: Any) -> Any:
        commands.append(str(args[0]))
        return original(*args, **kwargs)

    client.execute_command = counting  # type: ignore[method-assign]
    try:
        assert limiter.acquire("free", 64, max_wait=0) == 64
        limiter.release("free", 64)
        limiter.on_accepted("free", 64)
    finally:
        client.execute_command = original  # type: ignore[method-assign]
    assert commands == ["EVALSHA"]


def test_redis_down_fails_open(prefix: str) -> None:
    no_retry = Retry(NoBackoff(), 0)
    broken = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=no_retry)
    limiter = RedisRateLimiter(broken, prefix=prefix, limits={"m": ModelLimit(rpm=1)})
    assert limiter.acquire("m", 5, max_wait=0) == 5
    limiter.on_rate_limited("m", 1.0)
    limiter.release("m", 5)


def test_times_are_on_the_redis_clock(client: redis.Redis, prefix: str) -> None:
    tuning = Tuning(average_seconds=0.2)  # a measured rate to cut from after 0.2 s
    a, b = pair(client, prefix, limits={"m": ModelLimit(rpm=60)}, tuning=tuning)
    assert a.acquire("m", 1, max_wait=0) == 1
    time.sleep(0.3)
    a.on_rate_limited("m", 30.0)
    state = b.state("m")
    assert state.blocked_until == pytest.approx(b.redis_now() + 30.0, abs=1.0)
    assert state.learned == pytest.approx(60 * 0.97 * 0.5)  # nothing accepted: halved
