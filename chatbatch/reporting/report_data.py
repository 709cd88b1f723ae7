"""What ``chatbatch report`` and ``chatbatch watch`` show, gathered with SQL aggregates only.

Every figure is a GROUP BY or an ordered-set aggregate in the database (PostgreSQL and SQLite
alike), so a batch of a million rows costs a few scans and never a million Python objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    case,
    func,
    literal_column,
    or_,
    select,
)

from chatbatch.reporting.quality import QualitySummary, quality_summary
from chatbatch.reporting.usage import Grouping, UsageReport, usage_report
from chatbatch.rules.pricing import PriceTable
from chatbatch.rules.states import (
    ANSWERED_STATUSES,
    SCHEMA_INVALID,
    TERMINAL_STATUSES,
    RequestStatus,
)
from chatbatch.store import reads
from chatbatch.store.dialect import epoch_seconds, floor_div, is_postgresql, seconds_between
from chatbatch.store.models import all_requests_table as r

QUANTILES = ("0.5", "0.9", "0.99")
ERROR_STATUSES = (RequestStatus.FAILED, RequestStatus.EXPIRED)
# Bucket widths (seconds) the timeline may use: whole clock units, so bars line up with clocks.
BUCKET_WIDTHS = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip
NICE_STEPS = (1, 2, 2.5, 5)
TAIL_SHOWN = 1.25  # the histogram reaches the maximum when it is within this factor of p99


@dataclass(frozen=True)
class Timeline:
    """Finished requests per time bucket and final state; ``counts[i]`` covers
    ``[start + i*width, start + (i+1)*width)``."""

    start: datetime | None = None
    width_seconds: int = 0
    counts: list[dict[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Latency:
    """Seconds from submission to completion of succeeded requests: percentiles and a histogram
    of ``bin_width`` bins from 0, the last bin holding everything at or above ``upper``."""

    count: int = 0
    mean: float | None = None
    maximum: float | None = None
    percentiles: dict[str, float] = field(default_factory=dict)
    bin_width: float = 0.0
    bins: list[int] = field(default_factory=list)
    overflow: int = 0

    @property
    def upper(self) -> float:
        return self.bin_width * len(self.bins)


@dataclass(frozen=True)
class ErrorExample:
    custom_id: str
    status: str
    message: str | None


@dataclass(frozen=True)
class ErrorGroup:
    """The failed or expired requests sharing one error code, with a few of them."""

    code: str
    count: int
    examples: list[ErrorExample]


@dataclass(frozen=True)
class RecentError:
    """One error code among the batch's requests (failed, expired or waiting to retry): how many
    rows carry it and the message of the latest."""

    code: str
    count: int
    last_message: str | None


@dataclass(frozen=True)
class SchemaVerdicts:
    """How many answers followed the batch's JSON schema."""

    valid: int
    invalid: int

    @property
    def pass_rate(self) -> float | None:
        checked = self.valid + self.invalid
        return self.valid / checked if checked else None


@dataclass(frozen=True)
class ReportData:
    """Everything ``chatbatch report`` shows about one batch."""

    batch: dict[str, Any]
    counts: dict[str, int]
    timeline: Timeline
    latency: Latency
    errors: list[ErrorGroup]
    usage: UsageReport
    schema: SchemaVerdicts | None
    generated_at: datetime
    providers: dict[str, int] = field(default_factory=dict)  # requests sent, by provider
    quality: QualitySummary | None = None  # agreement with gold labels (``--gold-column``)

    @property
    def finished(self) -> int:
        return sum(self.counts[s.value] for s in TERMINAL_STATUSES)


@dataclass(frozen=True)
class Overview:
    """What one scan of the batch's rows gives: counts by state, schema verdicts, when the
    first and last request finished (epoch seconds), and the succeeded requests' latency sums."""

    counts: dict[str, int]
    schema: SchemaVerdicts
    finished_span: tuple[float, float] | None
    measured: int
    mean_latency: float | None
    max_latency: float | None


def collect(
    conn: Connection, batch: Any, *, prices: PriceTable | None, now: datetime
) -> ReportData:
    """The whole report of ``batch`` (a ``batches`` row), cost included when ``prices`` is
    given; the schema section only when the batch has a response schema."""
    fields = ("id", "name", "status", "pause_reason", "source", "total")
    seen = overview(conn, batch.id)
    return ReportData(
        batch={name: getattr(batch, name) for name in fields}
        | {"created_at": batch.created_at, "finished_at": batch.finished_at},
        counts=seen.counts,
        timeline=timeline(conn, batch.id, span=seen.finished_span),
        latency=latency(conn, batch.id, seen=seen),
        errors=error_groups(conn, batch.id),
        usage=usage_report(conn, by=Grouping.MODEL, batch_id=batch.id, prices=prices),
        schema=seen.schema if batch.response_schema else None,
        generated_at=now,
        providers=reads.provider_counts(conn, batch.id),
        quality=quality_summary(conn, batch),
    )


def overview(conn: Connection, batch_id: str) -> Overview:
    """Counts, schema verdicts, the finishing span and latency sums in one GROUP BY (status,
    schema_valid): on a large batch each scan of the rows is what costs."""
    done_at = epoch_seconds(r.c.completed_at)
    seconds = _latency_seconds()
    query = (
        select(
            r.c.status,
            r.c.schema_valid,
            func.count(),
            func.min(done_at),
            func.max(done_at),
            func.count(seconds),
            func.sum(seconds),
            func.max(seconds),
        )
        .where(r.c.batch_id == batch_id)
        .group_by(r.c.status, r.c.schema_valid)
    )
    counts = {status.value: 0 for status in RequestStatus}
    verdicts = {True: 0, False: 0}
    firsts, lasts, measured, total_latency, slowest = [], [], 0, 0.0, []
    terminal = {s.value for s in TERMINAL_STATUSES}
    for status, valid, n, first, last, timed, summed, longest in conn.execute(query):
        counts[status] = counts.get(status, 0) + int(n)
        if valid is not None:
            verdicts[bool(valid)] += int(n)
        if status in terminal and first is not None:
            firsts.append(float(first))
            lasts.append(float(last))
        if status == RequestStatus.SUCCEEDED.value and timed:
            measured += int(timed)
            total_latency += float(summed)
            slowest.append(float(longest))
    return Overview(
        counts=counts,
        schema=SchemaVerdicts(valid=verdicts[True], invalid=verdicts[False]),
        finished_span=(min(firsts), max(lasts)) if firsts else None,
        measured=measured,
        mean_latency=total_latency / measured if measured else None,
        max_latency=max(slowest) if slowest else None,
    )


def timeline(
    conn: Connection,
    batch_id: str,
    *,
    span: tuple[float, float] | None = None,
    max_buckets: int = 60,
) -> Timeline:
    """Finished requests per time bucket (by ``completed_at``) and state, bucketed in SQL with
    the smallest clock-aligned width that keeps at most ``max_buckets`` buckets. ``span``: the
    first and last completion (epoch seconds) when already known."""
    done = and_(
        r.c.batch_id == batch_id,
        r.c.status.in_([s.value for s in TERMINAL_STATUSES]),
        r.c.completed_at.is_not(None),
    )
    epoch = epoch_seconds(r.c.completed_at)
    if span is None:
        first, last = conn.execute(select(func.min(epoch), func.max(epoch)).where(done)).one()
        if first is None:
            return Timeline()
        span = (float(first), float(last))
    width = bucket_width(span[1] - span[0], max_buckets)
    start_key = math.floor(span[0] / width)
    key = floor_div(epoch, _number(width)).label("bucket")
    query = select(key, r.c.status, func.count()).where(done).group_by(key, r.c.status)
    counts: list[dict[str, int]] = [{} for _ in range(math.floor(span[1] / width) - start_key + 1)]
    for bucket, status, count in conn.execute(query):
        index = min(max(int(bucket) - start_key, 0), len(counts) - 1)  # float edges, clamped
        counts[index][status] = counts[index].get(status, 0) + int(count)
    return Timeline(datetime.fromtimestamp(start_key * width, UTC), width, counts)


def latency(
    conn: Connection, batch_id: str, *, seen: Overview | None = None, target_bins: int = 30
) -> Latency:
    """Completion latency of succeeded requests: count, mean, max, exact p50/p90/p99 (the
    smallest value with at least that share of requests at or below it) and a histogram up to
    the maximum, or just past p99 when the tail is long. ``seen``: the batch's overview when
    already read (it holds the count, mean and maximum)."""
    seen = seen or overview(conn, batch_id)
    if not seen.measured or seen.max_latency is None or seen.mean_latency is None:
        return Latency()
    seconds = _latency_seconds()
    measured = and_(
        r.c.batch_id == batch_id,
        r.c.status == RequestStatus.SUCCEEDED.value,
        seconds.is_not(None),
    )
    percentiles = _percentiles(conn, seconds, measured, seen.measured)
    p99 = percentiles["0.99"]
    slowest = seen.max_latency
    reach = slowest if slowest <= p99 * TAIL_SHOWN else p99  # a far tail: one bar for it
    width = nice_step(max(reach, 0.001) / target_bins)
    bins = max(1, math.floor(reach / width) + 1)
    upper = width * bins
    key = case((seconds >= _number(upper), _number(bins)), else_=floor_div(seconds, _number(width)))
    histogram = [0] * (bins + 1)
    query = select(key.label("bin"), func.count()).where(measured).group_by(key)
    for index, n in conn.execute(query):
        histogram[min(max(int(index), 0), bins)] += int(n)
    return Latency(
        count=seen.measured,
        mean=seen.mean_latency,
        maximum=slowest,
        percentiles=percentiles,
        bin_width=width,
        bins=histogram[:bins],
        overflow=histogram[bins],
    )


def error_groups(conn: Connection, batch_id: str, *, examples: int = 3) -> list[ErrorGroup]:
    """Failed and expired requests grouped by error code, and answers that did not follow the
    batch's schema as ``schema_invalid``; most frequent first, each with its first few requests
    (in input order) as examples."""
    errored = r.c.status.in_([s.value for s in ERROR_STATUSES])
    invalid = and_(
        r.c.status.in_([s.value for s in ANSWERED_STATUSES]), r.c.schema_valid.is_(False)
    )
    failed = and_(r.c.batch_id == batch_id, or_(errored, invalid))
    code = case((errored, func.coalesce(r.c.error_code, "unknown")), else_=SCHEMA_INVALID)
    message = case((errored, r.c.error_message), else_=r.c.schema_error)
    totals = conn.execute(
        select(code.label("code"), func.count().label("n"))
        .where(failed)
        .group_by(code)
        .order_by(func.count().desc(), code)
    ).all()
    if not totals:
        return []
    rank = func.row_number().over(partition_by=code, order_by=r.c.line_no).label("rank")
    ranked = (
        select(code.label("code"), r.c.custom_id, r.c.status, message.label("error_message"), rank)
        .where(failed)
        .subquery()
    )
    picked = (
        select(ranked.c.code, ranked.c.custom_id, ranked.c.status, ranked.c.error_message)
        .where(ranked.c.rank <= examples)
        .order_by(ranked.c.code, ranked.c.rank)
    )
    found: dict[str, list[ErrorExample]] = {}
    for row in conn.execute(picked):
        found.setdefault(row.code, []).append(
            ErrorExample(row.custom_id, row.status, row.error_message)
        )
    return [ErrorGroup(c, int(n), found.get(c, [])) for c, n in totals]


def recent_errors(conn: Connection, batch_id: str, *, limit: int = 5) -> list[RecentError]:
    """Error codes carried by the batch's failed, expired or retry-waiting (queued) rows, the
    most recently seen first, with their count and latest message."""
    failing = and_(
        r.c.batch_id == batch_id,
        r.c.status.in_([s.value for s in (*ERROR_STATUSES, RequestStatus.QUEUED)]),
        r.c.error_code.is_not(None),
    )
    seen = func.coalesce(r.c.completed_at, r.c.due_at)
    rank = func.row_number().over(partition_by=r.c.error_code, order_by=(seen.desc(), r.c.id))
    ranked = (
        select(
            r.c.error_code,
            r.c.error_message,
            seen.label("seen"),
            rank.label("rank"),
            func.count().over(partition_by=r.c.error_code).label("n"),
        )
        .where(failing)
        .subquery()
    )
    query = (
        select(ranked.c.error_code, ranked.c.n, ranked.c.error_message)
        .where(ranked.c.rank == 1)
        .order_by(ranked.c.seen.desc(), ranked.c.error_code)
        .limit(limit)
    )
    return [RecentError(code, int(n), message) for code, n, message in conn.execute(query)]


def _percentiles(
    conn: Connection, seconds: ColumnElement[float], where: ColumnElement[bool], count: int
) -> dict[str, float]:
    """Exact discrete percentiles: PostgreSQL's percentile_disc (one sort for all three), or on
    SQLite the value at rank ceil(q·n) found with ORDER BY … LIMIT 1 OFFSET."""
    if is_postgresql(conn):
        aggregates = [func.percentile_disc(float(q)).within_group(seconds) for q in QUANTILES]
        values = conn.execute(select(*aggregates).where(where)).one()
        return {q: float(v) for q, v in zip(QUANTILES, values, strict=True)}
    result = {}
    for q in QUANTILES:
        rank = max(1, math.ceil(Decimal(q) * count))
        query = select(seconds).where(where).order_by(seconds).limit(1).offset(rank - 1)
        result[q] = float(conn.execute(query).scalar_one())
    return result


def _latency_seconds() -> ColumnElement[float]:
    """Seconds from submission to completion of a row (NULL when either is unknown)."""
    return seconds_between(r.c.submitted_at, r.c.completed_at)


def _number(value: float) -> ColumnElement[Any]:
    """A number written into the SQL (not a parameter), so a GROUP BY expression matches its
    SELECT twin on PostgreSQL."""
    return literal_column(repr(value))


def bucket_width(span_seconds: float, max_buckets: int) -> int:
    """The smallest clock-aligned width (seconds) that covers ``span_seconds`` in at most
    ``max_buckets`` buckets; whole days beyond a day."""
    for width in BUCKET_WIDTHS:
        if (span_seconds // width) + 2 <= max_buckets:  # +2: both ends may straddle a boundary
            return width
    return 86400 * math.ceil(span_seconds / 86400 / (max_buckets - 2))


def nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is at least ``raw`` (> 0)."""
    exponent = math.floor(math.log10(raw))
    for factor in NICE_STEPS:
        step = factor * 10.0**exponent
        if step >= raw * (1 - 1e-12):
            return float(f"{step:.12g}")
    return float(f"{10.0 ** (exponent + 1):.12g}")
