"""Per-model rate limits: parsing them, and the pure pacing and AIMD maths behind the limiter.

``worker.ratelimit`` runs this maths either in-process (``LocalRateLimiter``, on top of the
functions here) or inside Redis (``RedisRateLimiter``, a Lua transcription of the same
functions, so every worker shares one state). No I/O here; every function takes ``now``.

The maths, per model:

- **Pacing: GCRA** (the "generic cell rate algorithm", a token bucket stored as one timestamp).
  ``tat`` is the theoretical arrival time of the next request at the paced rate; ``n`` requests
  may start at ``now`` when ``max(tat, now) + n·T - now <= burst·T`` (``T = 60 / rpm``). Grants
  are smooth: ``burst`` requests at once at most, then one every ``T``.
- **Headroom**: a known limit ``R`` is paced at ``R·(1 - headroom)`` with a burst of at most
  ``R·headroom/2``, so any 60-second window (the provider counts a sliding one) sees at most
  ``R·(1 - headroom/2)`` requests: the burst and clock jitter never cause a 429.
- **AIMD** when the provider answers 429 anyway (a limit nobody told us, a TPM limit, another
  client on the same key). A 429 cuts the learned rate, once per congestion episode (something
  was accepted since the last cut, and ``cooldown`` seconds passed: answers to requests already
  in flight say nothing new; and not before the traffic has lasted one averaging window, so
  there is a measured rate to cut from: earlier 429s only hold the model back), to
  ``admitted_share`` of the rate the provider accepted lately, or by ``decrease`` when that
  would be no cut (the first cut of a model with no known limit starts from the measured rate
  of grants), but never below ``floor_share`` of the best rate seen before a cut: a provider
  refusing a steady few per cent at random (shared capacity) must slow us down, not spiral the
  rate to nothing. The floor does not hold while ``quota_refusals`` of the POSTs answered
  lately (or more) were 429s: that is a quota nobody published, and the rate it admits is the
  rate (the best one seen becomes that, too); an opening burst a full bucket let through must
  not leave us sending twice the quota for good. Each accepted submission adds a little back:
  ``increase`` × the best rate, per minute of traffic, linearly. The learned rate never
  exceeds the known limit; reaching it, it is dropped. A measured rate idle for a few time
  constants starts afresh with the next stretch of traffic.
- **Holding back**: a 429 with Retry-After stops every grant for the model until it has passed;
  without one, for ``pause`` seconds, doubling with each 429 to a request sent after the last
  pause (up to ``pause_max``) until something is accepted again: a provider counting a sliding
  60-second window keeps refusing for a while whatever the new rate, and hammering it then only
  collects 429s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from chatbatch.rules.model_names import most_specific

WILDCARD = "*"
SETTING = "CHATBATCH_RATE_LIMITS"
FORM = "MODEL=RPM[/CONCURRENCY], e.g. 'gpt-4o-mini=500/32, deepseek-chat=60, *=1000'"
_EPSILON = 1e-9
IDLE_RESTART = 3.0  # a measured rate idle this many time constants (95 % decayed) starts afresh


@dataclass(frozen=True)
class ModelLimit:
    """A model's limits: ``rpm`` requests per minute, ``concurrency`` POSTs in flight at once
    across all workers. None: no such limit."""

    rpm: float | None = None
    concurrency: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.concurrency is None


NO_LIMIT = ModelLimit()


# --- parsing -------------------------------------------------------------------------------------


def parse_limits(text: str) -> dict[str, ModelLimit]:
    """Parse ``"gpt-4o-mini=500/32, deepseek-chat=60, other=/8, *=1000"`` (commas or newlines
    between entries; ``*`` is every model not named; ``/N`` a concurrency cap). ValueError names
    the bad entry."""
    limits: dict[str, ModelLimit] = {}
    for entry in re.split(r"[,\n]", text):
        entry = entry.strip()
        if not entry:
            continue
        name, value = _parse_entry(entry)
        if name in limits:
            raise _bad(entry, f"{name!r} is given twice")
        limits[name] = value
    return limits


def _parse_entry(entry: str) -> tuple[str, ModelLimit]:
    name, equals, value = entry.partition("=")
    name = name.strip()
    if not equals or not name:
        raise _bad(entry, "expected MODEL=LIMIT")
    rpm_text, slash, concurrency_text = value.partition("/")
    rpm_text, concurrency_text = rpm_text.strip(), concurrency_text.strip()
    if not rpm_text and not slash:
        raise _bad(entry, "no limit after '='")
    rpm = _positive_number(entry, rpm_text, "requests per minute") if rpm_text else None
    concurrency = None
    if slash:
        if not concurrency_text.isdigit() or int(concurrency_text) < 1:
            raise _bad(entry, f"concurrency {concurrency_text!r} is not an integer >= 1")
        concurrency = int(concurrency_text)
    return name, ModelLimit(rpm=rpm, concurrency=concurrency)


def _positive_number(entry: str, text: str, what: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise _bad(entry, f"{what} {text!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise _bad(entry, f"{what} must be > 0, got {text!r}")
    return number


def _bad(entry: str, reason: str) -> ValueError:
    return ValueError(f"{SETTING}: bad entry {entry!r}: {reason}; use {FORM}")


def limits_from_models_listing(payload: Any) -> dict[str, ModelLimit]:
    """The per-model RPM limits in GeekAI's ``GET /models`` answer
    (``{"data": [{"id": ..., "limitations": {"max_requests_per_min": N}}]}``); entries without
    a usable positive limit are skipped, never an error."""
    data = payload.get("data") if isinstance(payload, Mapping) else None
    limits: dict[str, ModelLimit] = {}
    for item in data if isinstance(data, list) else ():
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            continue
        limitations = item.get("limitations")
        rpm = limitations.get("max_requests_per_min") if isinstance(limitations, Mapping) else None
        if isinstance(rpm, bool):
            continue
        try:
            value = float(rpm)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            limits[item["id"]] = ModelLimit(rpm=value)
    return limits


def limit_for(
    model: str,
    configured: Mapping[str, ModelLimit],
    published: Mapping[str, ModelLimit] | None = None,
) -> ModelLimit:
    """The limit to enforce for ``model``: the configured one (or ``*``), tightened by what the
    provider publishes; each field is the smaller of the two known values."""
    name = most_specific(model, configured)  # an exact name, else the longest glob ("*" last)
    mine = NO_LIMIT if name is None else configured[name]
    theirs = (published or {}).get(model) or NO_LIMIT
    concurrency = _smaller(mine.concurrency, theirs.concurrency)
    return ModelLimit(rpm=_smaller(mine.rpm, theirs.rpm), concurrency=concurrency)


def _smaller(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def wait_from_ratelimit_headers(headers: Mapping[str, str]) -> float | None:
    """Seconds to hold off when OpenAI-style headers say no request is left
    (``x-ratelimit-remaining-requests: 0`` with ``x-ratelimit-reset-requests: 1m30s``); None
    otherwise. GeekAI documents none of these; honour them when present."""
    lowered = {k.lower(): v for k, v in headers.items()}
    remaining = lowered.get("x-ratelimit-remaining-requests", "").strip()
    if remaining not in ("0", "0.0"):
        return None
    return parse_duration(lowered.get("x-ratelimit-reset-requests", ""))


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float | None:
    """``"20ms"``, ``"1.5s"``, ``"6m0s"``, ``"1h2m"``, ``"7d"`` or plain seconds ``"7"``; None
    if not one."""
    text = text.strip().lower()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


# --- the maths -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tuning:
    """The knobs; the defaults are what the limiter uses."""

    headroom: float = 0.03  # pace a known limit at 97 %; burst of at most 1.5 % of it
    admitted_share: float = 0.9  # a 429 cuts the rate to this share of the accepted rate ...
    decrease: float = 0.5  # ... or, when that is no cut, multiplies it by this
    increase: float = 0.25  # per minute of accepted traffic, the rate grows by this share
    cooldown: float = 10.0  # 429s this soon after a cut do not cut again
    floor_share: float = 0.5  # ... and no cut goes below this share of the best rate before cuts
    quota_refusals: float = 0.25  # ... unless this share of POSTs or more is refused lately
    pause: float = 0.5  # a 429 without Retry-After holds the model back this long, doubling ...
    pause_max: float = 30.0  # ... up to this, until a submission is accepted again
    min_rpm: float = 1.0  # the learned rate never goes below this
    average_seconds: float = 10.0  # time constant of the measured rates
    concurrency_poll: float = 0.05  # how often a caller waiting for a concurrency slot looks again
    slot_ttl: float = 180.0  # a concurrency slot not released by then is freed (its holder died)
    state_ttl: float = 3600.0  # idle model state is forgotten after this
    retry_after_max: float = 300.0  # a longer Retry-After holds a model back only this long

    def __post_init__(self) -> None:
        for name in ("headroom", "admitted_share", "decrease", "floor_share", "quota_refusals"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be a fraction in (0, 1)")


Average = tuple[float, float, float | None]  # (rpm, when last folded, when first folded)


@dataclass(frozen=True)
class ModelState:
    """What the limiter keeps per model (in Redis: one hash). Times are seconds on one clock;
    ``sent``, ``admitted`` and ``refused`` are exponentially weighted rates (rpm) of grants, of
    accepted submissions and of 429s, each as (value, when last folded, when first folded)."""

    tat: float = 0.0  # GCRA theoretical arrival time
    blocked_until: float = 0.0  # Retry-After
    learned: float | None = None  # AIMD rate (rpm) while below the known limit, after a 429
    before_cut: float = 0.0  # the highest rate seen just before a cut
    last_cut: float = -math.inf
    accepted_since_cut: bool = True  # the provider took something since the last cut
    strikes: int = 0  # 429s without Retry-After since the last accepted submission
    sent: Average = (0.0, 0.0, None)
    admitted: Average = (0.0, 0.0, None)
    refused: Average = (0.0, 0.0, None)


def pace_rpm(state: ModelState, ceiling: float | None, tuning: Tuning) -> float | None:
    """The rate grants are paced at: the learned rate, capped by the known limit less headroom;
    None when neither exists (no pacing at all)."""
    cap = None if ceiling is None else ceiling * (1 - tuning.headroom)
    return _smaller(state.learned, cap)


def burst_size(rpm: float, tuning: Tuning) -> float:
    """How many requests may start at once after an idle spell: half the headroom, at least 1."""
    return max(1.0, math.floor(rpm * tuning.headroom / 2))


def grant(
    state: ModelState, now: float, count: int, ceiling: float | None, tuning: Tuning
) -> tuple[ModelState, int, float]:
    """How many of ``count`` may start at ``now``, and if none, the seconds until one may."""
    if now < state.blocked_until:
        return state, 0, state.blocked_until - now
    rpm = pace_rpm(state, ceiling, tuning)
    if rpm is None:
        return replace(state, sent=fold(state.sent, now, count, tuning)), count, 0.0
    interval = 60.0 / rpm
    tat = max(state.tat, now)
    slack = burst_size(rpm, tuning) * interval - (tat - now)
    granted = max(0, min(count, math.floor(slack / interval + _EPSILON)))
    if granted == 0:
        return state, 0, interval - slack
    sent = fold(state.sent, now, granted, tuning)
    return replace(state, tat=tat + granted * interval, sent=sent), granted, 0.0


def bounded_retry_after(retry_after: float | None, tuning: Tuning) -> float | None:
    """A provider's Retry-After as the limiter may use it: finite, 0 … ``retry_after_max``
    (a day-long or infinite pause would stop every batch of the model)."""
    if retry_after is None or math.isnan(retry_after):
        return None
    return min(max(retry_after, 0.0), tuning.retry_after_max)


def rate_limited(
    state: ModelState, now: float, retry_after: float | None, ceiling: float | None, tuning: Tuning
) -> ModelState:
    """A 429: hold the model back until Retry-After has passed, or without one for a pause that
    doubles with each 429 to a request sent after the last pause; and cut the rate, once per
    congestion episode (some submission accepted since the last cut, and ``cooldown`` passed):
    to a share of what the provider accepted lately, or multiplicatively when that is no cut."""
    retry_after = bounded_retry_after(retry_after, tuning)
    state = replace(state, refused=fold(state.refused, now, 1, tuning))
    if retry_after is None and now >= state.blocked_until:
        pause = min(tuning.pause_max, tuning.pause * 2.0**state.strikes)
        state = replace(state, blocked_until=now + pause, strikes=state.strikes + 1)
    elif retry_after is not None:
        state = replace(state, blocked_until=max(state.blocked_until, now + retry_after))
    if now - state.last_cut < tuning.cooldown or not state.accepted_since_cut:
        return state
    if not measured(state, now, tuning):
        return state
    current = pace_rpm(state, ceiling, tuning)
    if current is None:
        current = max(read_rpm(state.sent, now, tuning), tuning.min_rpm)
    admitted = read_rpm(state.admitted, now, tuning)
    target = admitted * tuning.admitted_share
    if not 0 < target < current:
        target = current * tuning.decrease
    if over_quota(state, now, tuning):  # what the quota admits is the rate, with no floor
        learned, peak = max(tuning.min_rpm, target), admitted
    else:
        peak = max(state.before_cut, current)
        learned = max(tuning.min_rpm, target, peak * tuning.floor_share)
    return replace(state, learned=learned, before_cut=peak, last_cut=now, accepted_since_cut=False)


def over_quota(state: ModelState, now: float, tuning: Tuning) -> bool:
    """Whether ``quota_refusals`` of the POSTs answered lately, or more, were 429s: a quota is
    refusing them, not chance (a floor at half the best rate would keep sending twice what the
    provider admits)."""
    refused = read_rpm(state.refused, now, tuning)
    admitted = read_rpm(state.admitted, now, tuning)
    return refused > 0 and refused >= tuning.quota_refusals * (refused + admitted)


def measured(state: ModelState, now: float, tuning: Tuning) -> bool:
    """Whether this stretch of traffic has lasted a whole averaging window, so the rates a cut
    starts from are measured, not the start-up ramp: a cut from the first second's trickle
    would set the floor (half the rate before the first cut) for good."""
    since = state.sent[2]
    return since is not None and now - since >= tuning.average_seconds


def accepted(
    state: ModelState, now: float, count: int, ceiling: float | None, tuning: Tuning
) -> ModelState:
    """``count`` submissions accepted: counted, and an additive increase of the learned rate
    (``increase`` × the larger of the rate before the cut and now, per minute of traffic)."""
    if count <= 0:
        return state
    admitted = fold(state.admitted, now, count, tuning)
    state = replace(state, admitted=admitted, strikes=0, accepted_since_cut=True)
    if state.learned is None:
        return state
    per_minute = max(state.before_cut, state.learned) * tuning.increase
    learned = state.learned + count * per_minute / state.learned
    cap = None if ceiling is None else ceiling * (1 - tuning.headroom)
    return replace(state, learned=None if cap is not None and learned >= cap else learned)


def fold(average: Average, now: float, count: int, tuning: Tuning) -> Average:
    """Add ``count`` events at ``now`` to an exponentially weighted rate (rpm). After an idle
    spell of ``IDLE_RESTART`` time constants the average starts afresh, so the next stretch of
    traffic is measured on its own (as the very first one is)."""
    value, at, since = average
    if since is not None and now - at > IDLE_RESTART * tuning.average_seconds:
        value, since = 0.0, None
    decayed = value * math.exp(-max(0.0, now - at) / tuning.average_seconds)
    return decayed + count * 60.0 / tuning.average_seconds, now, now if since is None else since


def read_rpm(average: Average, now: float, tuning: Tuning) -> float:
    """The rate at ``now``, corrected for the average having started from zero (over at least one
    second, so a first burst does not read as an enormous rate)."""
    value, at, since = average
    if since is None:
        return 0.0
    tau = tuning.average_seconds
    decayed = value * math.exp(-max(0.0, now - at) / tau)
    return decayed / (1 - math.exp(-max(1.0, now - since) / tau))
