"""What the simulator does: latencies, injected faults and limits; changeable while it runs."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

LatencySampler = Callable[[random.Random], float]

LATENCY_FORMS = "SECONDS, uniform:A,B, exp:MEAN or lognormal:MEDIAN,SIGMA"
RATE_FIELDS = (
    "fail_rate",
    "rate_429",
    "rate_500",
    "rate_503",
    "drop_rate",
    "lost_response_rate",
    "slow_rate",
    "unknown_status_rate",
    "nul_rate",
    "invalid_json_rate",
    "hostile_rate",
)
SECONDS_FIELDS = ("request_latency", "slow_seconds", "not_found_seconds", "retention_seconds")
KEY_FIELDS = ("api_keys", "payment_required_keys", "forbidden_keys")


@dataclass
class SimConfig:
    """Behaviour of a simulated GeekAI; rates are fractions of requests in [0, 1]."""

    api_keys: tuple[str, ...] = ("sk-simulator",)
    payment_required_keys: tuple[str, ...] = ()
    forbidden_keys: tuple[str, ...] = ()
    latency: str = "0.05"
    request_latency: float = 0.0
    fail_rate: float = 0.0
    rate_429: float = 0.0
    retry_after: float | None = 1.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    drop_rate: float = 0.0
    lost_response_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 30.0
    not_found_seconds: float = 0.0
    unknown_status_rate: float = 0.0
    blank_lines: int = 0
    nul_rate: float = 0.0
    # Fraction of JSON answers served broken (cut short, or a field of the wrong type).
    invalid_json_rate: float = 0.0
    rpm: int | None = None
    # Hostile provider mode (see simulator/hostile.py): poison requests whose last user message
    # holds [[hostile:KIND]] or [[script:MARKER]]; hostile_rate poisons that fraction of all
    # background requests (picked by fingerprint and seed) even without it.
    hostile: bool = False
    hostile_rate: float = 0.0
    hostile_body_bytes: int = 40 * 1024 * 1024
    retention_seconds: float = 7 * 24 * 3600.0
    seed: int | None = None

    def __post_init__(self) -> None:
        """Normalise key lists to tuples and reject impossible values up front."""
        for name in KEY_FIELDS:
            keys = getattr(self, name)
            if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
                raise ValueError(f"{name} must be a list of strings, got {keys!r}")
            setattr(self, name, tuple(keys))
        for name in RATE_FIELDS:
            _require(name, getattr(self, name), 0.0, 1.0, "a fraction in [0, 1]")
        for name in SECONDS_FIELDS:
            _require(name, getattr(self, name), 0.0, math.inf, "seconds >= 0")
        if self.retry_after is not None:
            _require("retry_after", self.retry_after, 0.0, math.inf, "seconds >= 0 or null")
        if not _is_int(self.blank_lines) or self.blank_lines < 0:
            raise ValueError(f"blank_lines must be an integer >= 0, got {self.blank_lines!r}")
        if self.rpm is not None and (not _is_int(self.rpm) or self.rpm < 1):
            raise ValueError(f"rpm must be an integer >= 1 or null, got {self.rpm!r}")
        if not isinstance(self.hostile, bool):
            raise ValueError(f"hostile must be true or false, got {self.hostile!r}")
        if not _is_int(self.hostile_body_bytes) or self.hostile_body_bytes < 0:
            raise ValueError(
                f"hostile_body_bytes must be an integer >= 0, got {self.hostile_body_bytes!r}"
            )
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"seed must be an integer or null, got {self.seed!r}")
        if not isinstance(self.latency, str):
            raise ValueError(f"latency must be a spec string ({LATENCY_FORMS})")
        parse_latency(self.latency)

    @classmethod
    def field_names(cls) -> set[str]:
        """The names ``with_changes`` and ``POST /_sim/config`` accept."""
        return {f.name for f in fields(cls)}

    def with_changes(self, changes: Mapping[str, Any]) -> SimConfig:
        """A copy with ``changes`` applied; ValueError names unknown fields or bad values."""
        unknown = set(changes) - self.field_names()
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)


def parse_latency(spec: str) -> LatencySampler:
    """Turn "0", "2.5", "uniform:A,B", "exp:MEAN" or "lognormal:MEDIAN,SIGMA" into a sampler."""
    kind, colon, arguments = spec.strip().partition(":")
    kind = kind.strip().lower()
    try:
        values = [float(v) for v in arguments.split(",")] if colon else []
        if not colon:
            fixed = float(kind)
            _latency_check(spec, math.isfinite(fixed) and fixed >= 0, "seconds must be >= 0")
            return lambda _rng: fixed
    except ValueError:
        raise ValueError(f"bad latency spec {spec!r}: not a number; use {LATENCY_FORMS}") from None
    _latency_check(spec, all(math.isfinite(v) for v in values), "values must be finite")
    if kind == "uniform":
        _latency_check(spec, len(values) == 2, "uniform takes two values A,B")
        low, high = values
        _latency_check(spec, 0 <= low <= high, "uniform needs 0 <= A <= B")
        return lambda rng: rng.uniform(low, high)
    if kind == "exp":
        _latency_check(spec, len(values) == 1, "exp takes one value, the mean")
        (mean,) = values
        _latency_check(spec, mean > 0, "exp needs a mean > 0")
        return lambda rng: rng.expovariate(1 / mean)
    if kind == "lognormal":
        _latency_check(spec, len(values) == 2, "lognormal takes two values MEDIAN,SIGMA")
        median, sigma = values
        _latency_check(spec, median > 0 and sigma >= 0, "lognormal needs MEDIAN > 0, SIGMA >= 0")
        mu = math.log(median)
        return lambda rng: rng.lognormvariate(mu, sigma)
    raise ValueError(f"bad latency spec {spec!r}: unknown form {kind!r}; use {LATENCY_FORMS}")


def _latency_check(spec: str, condition: bool, reason: str) -> None:
    """Raise the uniform bad-spec error when ``condition`` fails."""
    if not condition:
        raise ValueError(f"bad latency spec {spec!r}: {reason}; use {LATENCY_FORMS}")


def _is_int(value: Any) -> bool:
    """An int that is not a bool (JSON true must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _require(name: str, value: Any, low: float, high: float, what: str) -> None:
    """Raise ValueError unless ``value`` is a real number in [low, high]."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or math.isnan(value) or not low <= value <= high:
        raise ValueError(f"{name} must be {what}, got {value!r}")
