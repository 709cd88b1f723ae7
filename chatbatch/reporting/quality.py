"""The quality section of a batch loaded with ``--gold-column``: each row's gold label (from its
source record) and its answer's label, read in one pass in blocks so memory stays flat however
large the batch, and scored by ``chatbatch.rules.quality``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any, TypedDict

import orjson
from sqlalchemy import Connection, Select, select

from chatbatch.rules.quality import NO_ANSWER, agreement, answer_of, label_key
from chatbatch.rules.states import ANSWERED_STATUSES, TERMINAL_STATUSES
from chatbatch.store.models import all_requests_table as r

BLOCK_ROWS = 5000


class QualitySummary(TypedDict):
    """``status --json``'s ``quality``: the field compared, the gold column, how many finished
    rows have a gold label, how many of those were answered (the rest: ``unanswered``), rows
    with a gold label not finished yet (``pending``), and the figures (``rules.quality``)."""

    field: str | None
    gold_column: str
    case_sensitive: bool
    gold_rows: int
    answered: int
    unanswered: int
    pending: int
    agreed: int
    accuracy: float | None
    kappa: float | None
    per_class: dict[str, dict[str, Any]]
    confusion: dict[str, dict[str, int]]


def quality_summary(conn: Connection, batch: Any) -> QualitySummary | None:
    """The batch's agreement with its gold labels; None for a batch loaded without them."""
    if batch.gold_column is None:
        return None
    pairs, pending = gold_pairs(conn, batch)
    scored = agreement(pairs)
    return {
        "field": batch.gold_field,
        "gold_column": batch.gold_column,
        "case_sensitive": batch.gold_case_sensitive,
        "gold_rows": scored.gold_rows,
        "answered": scored.answered,
        "unanswered": scored.unanswered,
        "pending": pending,
        "agreed": scored.agreed,
        "accuracy": scored.accuracy,
        "kappa": scored.kappa,
        "per_class": {label: asdict(row) for label, row in scored.per_class.items()},
        "confusion": scored.confusion,
    }


def gold_pairs(conn: Connection, batch: Any) -> tuple[Counter[tuple[str, str | None]], int]:
    """Counts of (gold label, answer label or NO_ANSWER) over the finished rows that have a
    gold label, and how many rows with one are not finished yet."""
    finished = {status.value for status in TERMINAL_STATUSES}
    pairs: Counter[tuple[str, str | None]] = Counter()
    pending = 0
    query = select(r.c.status, r.c.record, r.c.content, r.c.schema_valid).where(
        r.c.batch_id == batch.id
    )
    for status, record, content, valid in streamed(conn, query):
        gold = gold_label(record, batch)
        if gold is None:
            continue
        if status not in finished:
            pending += 1
            continue
        answer = row_answer(status, content, valid, field=batch.gold_field, batch=batch)
        pairs[(gold, answer)] += 1
    return pairs, pending


def disagreeing_ids(conn: Connection, batch: Any) -> list[int]:
    """Ids of the answered requests whose answer's label differs from their gold label (what
    ``retry --status disagree`` asks again); rows without either are not among them."""
    query = select(r.c.id, r.c.status, r.c.record, r.c.content, r.c.schema_valid).where(
        r.c.batch_id == batch.id, r.c.status.in_(ANSWERED_STATUSES)
    )
    found = []
    for request_id, status, record, content, valid in streamed(conn, query):
        gold = gold_label(record, batch)
        answer = row_answer(status, content, valid, field=batch.gold_field, batch=batch)
        if gold is not None and answer is not NO_ANSWER and answer != gold:
            found.append(request_id)
    return found


def streamed(conn: Connection, query: Select[Any]) -> Iterator[Any]:
    """The rows of ``query`` in blocks of ``BLOCK_ROWS`` (a server-side cursor on PostgreSQL),
    the cursor closed however the caller stops reading. The option is set on the statement:
    on the connection it would stay, and stream every later statement too."""
    result = conn.execute(query.execution_options(yield_per=BLOCK_ROWS))
    try:
        yield from result
    finally:
        result.close()


def gold_label(record: str | None, batch: Any) -> str | None:
    """The row's gold label from its source record (None: the row has none)."""
    if record is None:
        return None
    values = orjson.loads(record)
    if not isinstance(values, dict):
        return None
    return label_key(values.get(batch.gold_column), case_sensitive=batch.gold_case_sensitive)


def row_answer(
    status: str, content: str | None, valid: bool | None, *, field: str | None, batch: Any
) -> str | None:
    """``rules.quality.answer_of`` with the batch's case rule."""
    return answer_of(status, content, valid, field=field, case_sensitive=batch.gold_case_sensitive)
