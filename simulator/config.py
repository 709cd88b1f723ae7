"""What the simulator does: latencies, injected faults, limits. Changeable while it runs."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, fields

LatencySampler = Callable[[random.Random], float]


@dataclass
class SimConfig:
    """Behaviour of a simulated GeekAI. Rates are fractions of requests in [0, 1]."""

    api_keys: tuple[str, ...] = ("sk-sim",)
    payment_required_keys: tuple[str, ...] = ()
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
    rpm: int | None = None
    retention_seconds: float = 7 * 24 * 3600.0
    seed: int | None = None

    def __post_init__(self) -> None:
        parse_latency(self.latency)  # fail fast on a bad spec

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


def parse_latency(spec: str) -> LatencySampler:
    """Turn "0", "2.5", "uniform:A,B", "exp:MEAN" or "lognormal:MEDIAN,SIGMA" into a sampler."""
    kind, _, args = spec.partition(":")
    try:
        if not args:
            fixed = float(kind)
            _check(fixed >= 0, spec)
            return lambda rng: fixed
        values = [float(v) for v in args.split(",")]
        if kind == "uniform" and len(values) == 2:
            low, high = values
            _check(0 <= low <= high, spec)
            return lambda rng: rng.uniform(low, high)
        if kind == "exp" and len(values) == 1:
            (mean,) = values
            _check(mean > 0, spec)
            return lambda rng: rng.expovariate(1 / mean)
        if kind == "lognormal" and len(values) == 2:
            median, sigma = values
            _check(median > 0 and sigma >= 0, spec)
            mu = math.log(median)
            return lambda rng: rng.lognormvariate(mu, sigma)
    except ValueError:
        pass
    raise ValueError(
        f"bad latency spec {spec!r}: use SECONDS, uniform:A,B, exp:MEAN or lognormal:MEDIAN,SIGMA"
    )


def _check(condition: bool, spec: str) -> None:
    if not condition:
        raise ValueError(spec)
