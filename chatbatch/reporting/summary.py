"""The status object of a batch, as ``status --json`` and ``list --json`` print it."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NotRequired, TypedDict

from sqlalchemy import Connection, Row

from chatbatch.reporting.quality import QualitySummary, quality_summary
from chatbatch.reporting.report_data import error_groups
from chatbatch.reporting.usage import Grouping, usage_report
from chatbatch.rules.pricing import PriceTable, format_money
from chatbatch.rules.states import ANSWERED_STATUSES, TERMINAL_STATUSES, BatchStatus
from chatbatch.settings import Settings
from chatbatch.store import reads
from chatbatch.store.db import db_now

PROJECTION_EXPONENT = -6
TOP_FAILURES = 3


class Expiring(TypedDict):
    """Submitted requests whose results the provider deletes soon, and the first deadline."""

    count: int
    earliest_deadline: str | None


class FailureExample(TypedDict):
    """One request that failed for a reason, and the provider's (or our) words."""

    custom_id: str
    message: str | None


class Failure(TypedDict):
    """A reason requests failed or expired: how many, and one example."""

    code: str
    count: int
    example: FailureExample | None


class SchemaSummary(TypedDict):
    """How the answers fared against the batch's schema."""

    valid: int
    invalid: int
    pass_rate: float | None
    retried: int


class CostSummary(TypedDict):
    """Money as exact decimal text (None where a model has no price), and which models lack one."""

    currency: str
    so_far: str | None
    projected_total: str | None
    unpriced_models: dict[str, str]


class BatchSummary(TypedDict):
    """The status object, key for key in the order ``status --json`` prints it; ``schema`` only
    for a batch with a schema, ``cost`` only when a command priced it."""

    id: str
    name: str
    status: str
    pause_reason: str | None
    priority: int
    total: int
    counts: dict[str, int]
    providers: dict[str, int]
    usage: dict[str, int]
    possible_duplicates: int
    usage_clamped: int
    expiring: Expiring
    stalled_since: str | None
    source: str | None
    created_at: str
    finished_at: str | None
    archived_at: str | None
    failures: list[Failure]
    schema: NotRequired[SchemaSummary]
    quality: NotRequired[QualitySummary]
    cost: NotRequired[CostSummary]


DEFAULT_STALL_AFTER = timedelta(minutes=15)  # CHATBATCH_STALL_SECONDS' default


def batch_summary(
    conn: Connection,
    batch: Row[Any],
    *,
    expiry_warning: timedelta,
    stall_after: timedelta = DEFAULT_STALL_AFTER,
) -> BatchSummary:
    """Counts by state, summed usage, results at risk of expiring, and the batch's own fields.

    ``expiring`` counts submitted requests whose provider deadline is less than
    ``expiry_warning`` away: if nothing fetches them in time their results are lost.
    ``stalled_since`` is when a batch with work due last made progress, once that is longer
    ago than ``stall_after`` (else null): no worker is working it, or the provider is stuck.
    """
    usage = reads.usage_totals(conn, batch.id)
    possible_duplicates = usage.pop("possible_duplicates")
    usage_clamped = usage.pop("usage_clamped")
    now = db_now(conn)
    at_risk, earliest = reads.expiry_risk(conn, batch.id, before=now + expiry_warning)
    summary: BatchSummary = {
        "id": batch.id,
        "name": batch.name,
        "status": batch.status,
        "pause_reason": batch.pause_reason,
        "priority": batch.priority,
        "total": batch.total,
        "counts": reads.status_counts(conn, batch.id),
        "providers": reads.provider_counts(conn, batch.id),
        "usage": usage,
        "possible_duplicates": possible_duplicates,
        "usage_clamped": usage_clamped,
        "expiring": {"count": at_risk, "earliest_deadline": _iso(earliest)},
        "stalled_since": _iso(
            reads.stalled_since(conn, batch.id, now=now, stall_after=stall_after)
        ),
        "source": batch.source,
        "created_at": batch.created_at.isoformat(),  # never null
        "finished_at": _iso(batch.finished_at),
        "archived_at": _iso(batch.archived_at),
        "failures": top_failures(conn, batch.id),
    }
    if batch.response_schema:
        summary["schema"] = schema_summary(conn, batch.id)
    if (quality := quality_summary(conn, batch)) is not None:
        summary["quality"] = quality
    return summary


def status_object(
    conn: Connection, batch: Row[Any], *, config: Settings, prices: PriceTable | None
) -> BatchSummary:
    """The status object as every front end shows it (``status``, ``list``, the dashboard):
    deadlines and stalls judged by ``config``, and the ``cost`` when ``prices`` is known."""
    summary = batch_summary(
        conn,
        batch,
        expiry_warning=timedelta(seconds=config.expiry_warning_seconds),
        stall_after=timedelta(seconds=config.stall_seconds),
    )
    if prices is not None:
        summary["cost"] = cost_summary(conn, batch, prices=prices)
    return summary


def batch_prices(batch: Any, given: PriceTable | None) -> PriceTable | None:
    """The price table for one batch: ``given`` (``--prices`` or ``CHATBATCH_PRICES``) when
    there is one, else the table stored with the batch at load time, else None."""
    if given is not None or not getattr(batch, "prices", None):
        return given
    return PriceTable.model_validate_json(batch.prices)


EXIT_ALL_SUCCEEDED = 0
EXIT_SOME_FAILED = 3
EXIT_PAUSED = 4


def exit_code(summary: BatchSummary, *, min_valid: float | None = None) -> int:
    """How a worked batch ended, as ``run`` exits and notifications say: 0 when every request
    has an answer (succeeded or reused), 4 when the batch is paused, 3 when some failed,
    expired or were cancelled, or (``min_valid``) the schema pass rate ended below it."""
    if summary["status"] == BatchStatus.PAUSED:
        return EXIT_PAUSED
    answered = sum(summary["counts"][s] for s in ANSWERED_STATUSES)
    if answered != summary["total"] or valid_shortfall(summary, min_valid):
        return EXIT_SOME_FAILED
    return EXIT_ALL_SUCCEEDED


def valid_shortfall(summary: BatchSummary, min_valid: float | None) -> str | None:
    """Why the batch's schema pass rate fails ``--min-valid`` (None when it does not, or no
    minimum is set): a nightly job must be able to tell a 61% pass rate from a good run."""
    schema = summary.get("schema")
    if min_valid is None or schema is None:
        return None
    rate = schema["pass_rate"]
    if rate is not None and rate >= min_valid:
        return None
    shown = "no answer checked" if rate is None else f"{rate:.1%}"
    return f"schema pass rate {shown} is below --min-valid {min_valid:.1%}"


def top_failures(conn: Connection, batch_id: str) -> list[Failure]:
    """The most frequent reasons requests failed or expired (answers that broke the schema
    too), each with a count and one example."""
    groups = error_groups(conn, batch_id, examples=1)[:TOP_FAILURES]
    return [
        {
            "code": group.code,
            "count": group.count,
            "example": {
                "custom_id": group.examples[0].custom_id,
                "message": group.examples[0].message,
            }
            if group.examples
            else None,
        }
        for group in groups
    ]


def schema_summary(conn: Connection, batch_id: str) -> SchemaSummary:
    """How many answers follow the batch's schema, the share that do (None before any answer),
    and how many invalid answers were asked again."""
    counts = reads.schema_counts(conn, batch_id)
    judged = counts["valid"] + counts["invalid"]
    return {
        "valid": counts["valid"],
        "invalid": counts["invalid"],
        "pass_rate": counts["valid"] / judged if judged else None,
        "retried": counts["retried"],
    }


def cost_summary(conn: Connection, batch: Row[Any], *, prices: PriceTable) -> CostSummary:
    """What the batch has cost so far (exact, retried answers included) and a projected total:
    so far, plus the current round's average cost per finished request for each request still
    open. Amounts are decimal text, null when some model has no price."""
    spent = usage_report(conn, by=Grouping.MODEL, batch_id=batch.id, prices=prices).total_cost
    current = usage_report(
        conn, by=Grouping.MODEL, batch_id=batch.id, prices=prices, include_past=False
    ).total_cost
    counts = reads.status_counts(conn, batch.id)
    finished = sum(counts[s] for s in TERMINAL_STATUSES)
    projected = None
    if spent and spent.amount is not None and current and current.amount is not None and finished:
        still_open = batch.total - finished
        projected = spent.amount + current.amount / finished * still_open
        if still_open:  # as precise as the spend, at least to the millionth
            places = min(int(spent.amount.as_tuple().exponent), PROJECTION_EXPONENT)
            projected = projected.quantize(Decimal(1).scaleb(places))
    return {
        "currency": prices.currency,
        "so_far": format_money(spent.amount if spent else None),
        "projected_total": format_money(projected),
        "unpriced_models": dict(spent.missing) if spent else {},
    }


def _iso(value: datetime | None) -> str | None:
    """``value`` as ISO 8601 text, None for None."""
    return value.isoformat() if value else None
