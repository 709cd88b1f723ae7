"""A batch's requests a page at a time, for the dashboard's table and ``/api/batches/{id}/
requests``: keyset pagination on ``line_no`` (a page costs the same at row 10 and at row
1,000,000), filtered by status (``ix_requests_batch_id_status`` holds ``line_no`` last, so
one status is read in order from the index) and by a custom_id prefix."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, select

from chatbatch.reporting.request_detail import row_usage, usage_cost
from chatbatch.rules.completions import USAGE_COLUMNS
from chatbatch.rules.pricing import PriceTable, format_money
from chatbatch.rules.states import RequestStatus
from chatbatch.store.models import all_requests_table as r

MAX_PAGE = 200
PREVIEW_CHARS = 160
LIKE_ESCAPE = "\\"


@dataclass(frozen=True)
class PageQuery:
    """Which page: rows after line ``after``, at most ``limit``, of one ``status`` and with
    custom_ids starting with ``search`` when given. ValueError names what is wrong."""

    after: int = 0
    limit: int = 50
    status: str | None = None
    search: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        if self.search is not None and "\x00" in self.search:
            raise ValueError("a custom_id has no NUL character")
        if self.after < 0:
            raise ValueError("after must be a line number (0 or more)")
        if self.status is not None and self.status not in RequestStatus._value2member_map_:
            known = ", ".join(s.value for s in RequestStatus)
            raise ValueError(f"unknown status {self.status!r} (one of {known})")


def request_page(
    conn: Connection, batch_id: str, query: PageQuery, *, prices: PriceTable | None
) -> dict[str, Any]:
    """One page of the batch's requests in line order, and the ``after`` of the next page
    (None on the last)."""
    rows = conn.execute(_page_select(batch_id, query)).all()
    more = len(rows) > query.limit
    shown = rows[: query.limit]
    return {
        "requests": [_row(row, prices) for row in shown],
        "next_after": shown[-1].line_no if more else None,
    }


def _page_select(batch_id: str, query: PageQuery) -> Any:
    """The page's SELECT: one more row than asked, to know whether another page follows."""
    columns = (
        r.c.id, r.c.line_no, r.c.custom_id, r.c.status, r.c.model, r.c.attempts,
        r.c.submitted_at, r.c.completed_at, r.c.content, r.c.schema_valid, r.c.error_code,
        *(r.c[name] for name in USAGE_COLUMNS),
    )  # fmt: skip
    chosen = select(*columns).where(r.c.batch_id == batch_id, r.c.line_no > query.after)
    if query.status is not None:
        chosen = chosen.where(r.c.status == query.status)
    if query.search:
        chosen = chosen.where(r.c.custom_id.like(_prefix(query.search), escape=LIKE_ESCAPE))
    return chosen.order_by(r.c.line_no).limit(query.limit + 1)


def _prefix(text: str) -> str:
    """A LIKE pattern for values starting with ``text`` (its own % and _ taken literally)."""
    for special in (LIKE_ESCAPE, "%", "_"):
        text = text.replace(special, LIKE_ESCAPE + special)
    return text + "%"


def _row(row: Row[Any], prices: PriceTable | None) -> dict[str, Any]:
    """One request of the table: what it is, how it went, what it cost, its answer's start."""
    latency = None
    if row.submitted_at is not None and row.completed_at is not None:
        latency = round((row.completed_at - row.submitted_at).total_seconds(), 3)
    return {
        "id": row.id,
        "line": row.line_no,
        "custom_id": row.custom_id,
        "status": row.status,
        "model": row.model,
        "attempts": row.attempts,
        "latency_seconds": latency,
        "total_tokens": row.total_tokens,
        "cost": format_money(_cost(row, prices)),
        "schema_valid": row.schema_valid,
        "error_code": row.error_code,
        "preview": None if row.content is None else row.content[:PREVIEW_CHARS],
    }


def _cost(row: Row[Any], prices: PriceTable | None) -> Decimal | None:
    """What the row's latest answer cost (None: no usage, no price table or no price)."""
    usage = row_usage(row)
    return None if usage is None else usage_cost(usage, row.model, prices)
