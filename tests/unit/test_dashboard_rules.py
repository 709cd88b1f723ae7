"""The dashboard's pure parts: who counts as loopback, tokens and CSRF, and how long kept
figures answer (``web.security``, ``web.cache``)."""

from __future__ import annotations

import pytest

from web import cache, security
from web.cache import FigureCache


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:8800", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("LOCALHOST:80", True),
        ("::1", True),
        ("[::1]:8800", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("", False),
    ],
)
def test_loopback_names(host: str, loopback: bool) -> None:
    assert security.is_loopback(host) is loopback


def test_csrf_tokens_belong_to_one_session_and_one_process() -> None:
    secret, other_secret = security.new_secret(), security.new_secret()
    session = security.new_session()
    token = security.csrf_token(secret, session)
    assert security.csrf_ok(secret, session, token)
    assert not security.csrf_ok(secret, security.new_session(), token)
    assert not security.csrf_ok(other_secret, session, token)
    assert not security.csrf_ok(secret, None, token)
    assert not security.csrf_ok(secret, session, None)
    assert not security.csrf_ok(secret, session, token[:-1] + "0")


def test_a_token_is_proved_by_bearer_or_login_cookie() -> None:
    token = "s3cret-token"
    cookie = security.auth_cookie_value(token)
    assert token not in cookie
    assert security.authorised(token, bearer=token, cookie=None)
    assert security.authorised(token, bearer=None, cookie=cookie)
    assert not security.authorised(token, bearer="wrong", cookie=None)
    assert not security.authorised(token, bearer=None, cookie=security.auth_cookie_value("x"))
    assert not security.authorised(token, bearer=None, cookie=None)
    assert security.bearer_of("Bearer abc ") == "abc"
    assert security.bearer_of("bearer abc") == "abc"
    assert security.bearer_of("Basic abc") is None
    assert security.bearer_of("Bearer ") is None
    assert security.bearer_of(None) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(cache, "time", fake)
    return fake


def test_a_settled_batch_is_computed_once_until_its_state_changes(clock: Clock) -> None:
    figures, calls = FigureCache(), []

    def compute() -> int:
        calls.append(clock.now)
        return len(calls)

    assert figures.get(("status", "b1"), "completed", False, compute) == 1
    clock.now += 3600
    assert figures.get(("status", "b1"), "completed", False, compute) == 1
    assert figures.get(("status", "b1"), "running", True, compute) == 2  # retried: at once
    figures.forget("b1")
    assert figures.get(("status", "b1"), "running", True, compute) == 3
    assert figures.get(("status", "b2"), "running", True, compute) == 4  # its own entry


def test_a_running_batch_is_recomputed_after_a_pause_that_grows_with_its_cost(
    clock: Clock,
) -> None:
    figures, calls = FigureCache(), []

    def costly() -> int:
        calls.append(1)
        clock.now += 2.0  # two seconds to compute: kept COST_FACTOR times as long
        return len(calls)

    assert figures.get("x", "running", True, costly) == 1
    clock.now += 2.0 * cache.COST_FACTOR - 0.5
    assert figures.get("x", "running", True, costly) == 1
    clock.now += 1.0
    assert figures.get("x", "running", True, costly) == 2

    cheap = FigureCache()
    assert cheap.get("y", "running", True, lambda: "a") == "a"
    clock.now += cache.MIN_AGE_SECONDS / 2
    assert cheap.get("y", "running", True, lambda: "b") == "a"
    clock.now += cache.MIN_AGE_SECONDS
    assert cheap.get("y", "running", True, lambda: "b") == "b"


def test_one_thread_computes_and_a_forget_during_it_wins() -> None:
    import threading

    figures, started, release, calls = FigureCache(), threading.Event(), threading.Event(), []

    def slow() -> str:
        calls.append(1)
        started.set()
        release.wait(5)
        return "old"

    first = threading.Thread(target=lambda: figures.get("n", "running", True, slow))
    first.start()
    assert started.wait(5)
    second_result: list[str] = []
    second = threading.Thread(
        target=lambda: second_result.append(figures.get("n", "running", True, slow))
    )
    second.start()
    figures.forget("b")  # a button acted while the first computation ran
    release.set()
    first.join(5)
    second.join(5)
    assert len(calls) == 2  # the second waited, found nothing kept (forgotten), computed once
    assert second_result == ["old"]
