"""``--max-cost``: how many more requests a capped batch may submit, and why it pauses.

Spent is exact (stored usage at the batch's price table); what is in flight is estimated at the
batch's average cost per answer so far or, before any answer, from the request itself. Every
statement the cost cap runs is here (``worker.cost_guard`` keeps only per-process snapshots);
the claim itself, counting ``capped_claims``, is ``chatbatch.store.claims.claim_for_submit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Connection, func, select

from chatbatch.input.estimates import estimated_prompt_tokens
from chatbatch.reporting.usage import Grouping, usage_report
from chatbatch.rules.pricing import MILLION, PriceTable, format_money
from chatbatch.rules.states import BatchStatus, RequestStatus
from chatbatch.store import writes
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import requests_table as r

# Output tokens assumed for a request that sets no max_tokens, until real answers are known.
DEFAULT_OUTPUT_TOKENS = 256
IN_FLIGHT = (RequestStatus.SUBMITTING, RequestStatus.SUBMITTED)
COST_PAUSE = "cost limit"  # how every pause reason written here begins
NO_LIMIT = 1 << 30


@dataclass(frozen=True)
class CapState:
    """A capped batch's spend: exact so far, plus the estimated cost of one more request."""

    batch_id: str
    max_cost: Decimal
    spent: Decimal | None  # None: some answer's model has no price, so spend is unknown
    per_request: Decimal
    currency: str
    unpriced: str = ""


def allowance(cap: CapState, in_flight: int) -> int:
    """How many more requests may be submitted now: spent plus what is in flight plus them must
    stay within the cap. Zero when the spend cannot be known."""
    if cap.spent is None:
        return 0
    headroom = cap.max_cost - cap.spent - cap.per_request * in_flight
    if headroom <= 0:
        return 0
    if cap.per_request <= 0:
        return NO_LIMIT
    return int(headroom / cap.per_request)


def pause_reason(cap: CapState, in_flight: int) -> str:
    """Why the batch stopped, in words the user can act on."""
    if cap.spent is None:
        return f"{COST_PAUSE} cannot be checked: {cap.unpriced}; add prices, then resume"
    flying = format_money(cap.per_request * in_flight)
    return (
        f"{COST_PAUSE} {format_money(cap.max_cost)} {cap.currency} reached: spent "
        f"{format_money(cap.spent)}, about {flying} in flight; `chatbatch resume --max-cost "
        "AMOUNT` raises it, plain `resume` lifts it"
    )


def request_estimate(body: dict[str, Any], prices: PriceTable, model: str) -> Decimal | None:
    """What one request is likely to cost before any answer is known: its prompt (estimated)
    at the input price, plus max_tokens (or ``DEFAULT_OUTPUT_TOKENS``) at the output price."""
    price = prices.price_for(model)
    if price is None:
        return None
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    output = limit if isinstance(limit, int) and limit > 0 else DEFAULT_OUTPUT_TOKENS
    prompt = estimated_prompt_tokens(body)
    return (prompt * price.input + output * price.output) / MILLION


def read_cap(conn: Connection, batch: Any) -> CapState:
    """The spend of one capped batch (a row with ``id``, ``max_cost`` and ``prices``)."""
    prices = PriceTable.model_validate_json(batch.prices)
    report = usage_report(conn, by=Grouping.MODEL, batch_id=batch.id, prices=prices)
    total = report.total_cost
    spent = total.amount if total else Decimal(0)
    unpriced = ", ".join(sorted(total.missing)) if total and total.missing else ""
    answers = sum(group.answers for group in report.groups)
    if spent is not None and answers:
        per_request = spent / answers
    else:
        per_request = _first_estimate(conn, batch.id, prices)
    return CapState(
        batch.id,
        Decimal(batch.max_cost),
        spent,
        per_request,
        prices.currency,
        f"no price for {unpriced}" if unpriced else "",
    )


def _first_estimate(conn: Connection, batch_id: str, prices: PriceTable) -> Decimal:
    """The estimate for the batch's first queued request (requests of one batch are alike)."""
    row = conn.execute(
        select(r.c.model, r.c.body)
        .where(r.c.batch_id == batch_id, r.c.status == RequestStatus.QUEUED)
        .order_by(r.c.line_no)
        .limit(1)
    ).first()
    if row is None:
        return Decimal(0)
    estimate = request_estimate(orjson.loads(row.body), prices, row.model)
    return Decimal(0) if estimate is None else estimate


def capped_batches(conn: Connection, batch_ids: list[str] | None = None) -> list[Any]:
    """Running batches with a cost cap (``id``, ``max_cost``, ``prices``)."""
    query = select(b.c.id, b.c.max_cost, b.c.prices).where(
        b.c.status == BatchStatus.RUNNING, b.c.max_cost.is_not(None), b.c.prices.is_not(None)
    )
    if batch_ids is not None:
        query = query.where(b.c.id.in_(batch_ids))
    return list(conn.execute(query))


def in_flight(conn: Connection, batch_id: str) -> int:
    """Requests of the batch being submitted or awaiting their result (committed by anyone)."""
    return int(
        conn.execute(
            select(func.count()).where(r.c.batch_id == batch_id, r.c.status.in_(IN_FLIGHT))
        ).scalar_one()
    )


def lock_capped(conn: Connection, batch_ids: list[str]) -> list[Any]:
    """The running, capped batches among ``batch_ids`` (``id``, ``max_cost``, ``prices``,
    ``capped_claims``), locked until the transaction ends: workers claiming for the same capped
    batch take turns, and each sees the others' claims."""
    return list(
        conn.execute(
            select(b.c.id, b.c.max_cost, b.c.prices, b.c.capped_claims)
            .where(
                b.c.id.in_(batch_ids),
                b.c.status == BatchStatus.RUNNING,
                b.c.max_cost.is_not(None),
            )
            .with_for_update()
        ).all()
    )


def has_queued(conn: Connection, batch_id: str) -> bool:
    """Whether the batch still has a request waiting to be submitted."""
    query = select(r.c.id).where(r.c.batch_id == batch_id, r.c.status == RequestStatus.QUEUED)
    return conn.execute(query.limit(1)).first() is not None


def pause_at_cap(conn: Connection, cap: CapState) -> str | None:
    """Pause a capped batch that may submit nothing more, saying why; the reason if this call
    paused it (None: it was no longer running)."""
    reason = pause_reason(cap, 0)
    return reason if writes.pause_batch(conn, cap.batch_id, reason) else None
