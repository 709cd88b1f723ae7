"""One request in full, for ``chatbatch show``: as it was sent, every outcome it had (earlier
rounds from ``past_results`` too), the answer, usage and cost, and the schema verdict."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Connection, Row, select

from chatbatch.errors import NotFoundError
from chatbatch.reporting.quality import gold_label, row_answer
from chatbatch.rules.completions import USAGE_COLUMNS
from chatbatch.rules.pricing import PriceTable, Usage, cost_of, format_money
from chatbatch.rules.quality import GoldRule
from chatbatch.store.models import all_requests_table as r
from chatbatch.store.models import past_results_table as past
from chatbatch.store.reads import batch_name_of


def request_detail(
    conn: Connection, batch: Row[Any], custom_id: str, *, prices: PriceTable | None
) -> dict[str, Any]:
    """Everything known about the request ``custom_id`` of ``batch`` (a JSON-ready dict);
    NotFoundError when the batch has no such request."""
    row = conn.execute(
        select(r).where(r.c.batch_id == batch.id, r.c.custom_id == custom_id)
    ).first()
    if row is None:
        raise NotFoundError(f"batch {batch.name} has no request with custom_id {custom_id!r}")
    earlier = conn.execute(
        select(past).where(past.c.request_id == row.id).order_by(past.c.round)
    ).all()
    return {
        "batch": {"id": batch.id, "name": batch.name},
        "custom_id": row.custom_id,
        "line": row.line_no,
        "status": row.status,
        "request": orjson.loads(row.body),
        "record": orjson.loads(row.record) if row.record else None,
        "attempts": row.attempts,
        "rounds": row.retries + 1,
        "possible_duplicates": row.ambiguous_submits,
        "polls": row.poll_count,
        "task": _task(row),
        "answer": _answer(row),
        "error": _error(row),
        **_usage_and_cost(row, row.model, prices),
        "schema": _schema(row, batch),
        "gold": _gold(row, batch),
        "reused_from": _reused_from(conn, row.reused_from),
        "history": [_earlier(entry, row.model, prices) for entry in earlier],
    }


def request_key(conn: Connection, request_id: int) -> tuple[str, str]:
    """The batch id and custom_id of the request with ``request_id`` (archived ones too);
    NotFoundError when there is none."""
    found = conn.execute(select(r.c.batch_id, r.c.custom_id).where(r.c.id == request_id)).first()
    if found is None:
        raise NotFoundError(f"no request with id {request_id}")
    return found.batch_id, found.custom_id


def _task(row: Row[Any]) -> dict[str, Any]:
    """The provider task of the latest round, and its times."""
    return {
        "remote_id": row.remote_id,
        "remote_status": row.remote_status,
        "submitted_at": _iso(row.submitted_at),
        "completed_at": _iso(row.completed_at),
        "expires_at": _iso(row.expires_at),
    }


def _answer(row: Row[Any]) -> dict[str, Any] | None:
    """The provider's answer as stored: what the model said (content, reasoning, tool calls,
    citations, the other choices' content) and the whole body."""
    if row.response is None and row.content is None:
        return None
    return {
        "content": row.content,
        "reasoning": row.reasoning_content,
        "tool_calls": _json_or_text(row.tool_calls),
        "citations": _json_or_text(row.citations),
        "other_contents": _json_or_text(row.other_contents),
        "finish_reason": row.finish_reason,
        "model": row.response_model,
        "http_status": row.http_status,
        "body": _json_or_text(row.response),
    }


def _error(row: Row[Any]) -> dict[str, str] | None:
    if row.error_code is None and row.error_message is None:
        return None
    return {"code": row.error_code, "message": row.error_message}


def _schema(row: Row[Any], batch: Row[Any]) -> dict[str, Any] | None:
    if not batch.response_schema:
        return None
    return {
        "valid": row.schema_valid,
        "error": row.schema_error,
        "asked_again": row.invalid_retries,
    }


def _gold(row: Row[Any], batch: Row[Any]) -> dict[str, Any] | None:
    """For a batch with gold labels: the row's gold label, the label its answer gives (as
    ``status`` compares them) and whether they match (None until the row is finished)."""
    if not batch.gold_column:
        return None
    record = orjson.loads(row.record) if row.record else {}
    rule = GoldRule(batch.gold_column, batch.gold_field, batch.gold_case_sensitive)
    match = rule.match_cell(
        row.status, record if isinstance(record, dict) else {}, row.content, row.schema_valid
    )
    return {
        "column": batch.gold_column,
        "field": batch.gold_field,
        "label": gold_label(row.record, batch),
        "answer_label": row_answer(
            row.status, row.content, row.schema_valid, field=batch.gold_field, batch=batch
        ),
        "match": None if match is None else match == "true",
    }


def _usage_and_cost(row: Row[Any], model: str, prices: PriceTable | None) -> dict[str, Any]:
    """``usage`` (None when the outcome carried none), ``usage_clamped`` and ``cost``
    (money text; None without a price table or a price for the model)."""
    usage = row_usage(row)
    if usage is None:
        return {"usage": None, "usage_clamped": False, "cost": None}
    return {
        "usage": usage.as_dict(),
        "usage_clamped": bool(row.usage_clamped),
        "cost": format_money(usage_cost(usage, model, prices)),
    }


def row_usage(row: Row[Any]) -> Usage | None:
    """The usage a stored outcome carried (None when it carried none)."""
    if all(getattr(row, name) is None for name in USAGE_COLUMNS):
        return None
    return Usage(**{name: getattr(row, name) or 0 for name in USAGE_COLUMNS})


def usage_cost(usage: Usage, model: str, prices: PriceTable | None) -> Decimal | None:
    """What ``usage`` of ``model`` cost (None without a price table or a price for it)."""
    price = prices.price_for(model) if prices else None
    return cost_of(usage, price) if price else None


def _earlier(entry: Row[Any], model: str, prices: PriceTable | None) -> dict[str, Any]:
    """One outcome a later round replaced (``chatbatch retry``, or a schema re-ask)."""
    return {
        "round": entry.round,
        "status": entry.status,
        "attempts": entry.attempts,
        "remote_id": entry.remote_id,
        "submitted_at": _iso(entry.submitted_at),
        "completed_at": _iso(entry.completed_at),
        "http_status": entry.http_status,
        "error": _error(entry),
        **_usage_and_cost(entry, model, prices),
        "body": _json_or_text(entry.response),
    }


def _reused_from(conn: Connection, request_id: int | None) -> dict[str, str] | None:
    """The batch and custom_id an answer was reused from."""
    if request_id is None:
        return None
    source = conn.execute(select(r.c.batch_id, r.c.custom_id).where(r.c.id == request_id)).first()
    if source is None:  # its batch was deleted since
        return None
    return {"batch": batch_name_of(conn, source.batch_id), "custom_id": source.custom_id}


def _json_or_text(text: str | None) -> Any:
    """A stored body parsed when it is JSON, else as the text it is."""
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
