"""The CSV cells both export paths make in Python rather than in SQL, one row at a time: source
record values, answer fields, ``gold_match`` and the content of further choices. The SQL path
sends what they need as it is stored; both then call ``made_row`` and ``made_cell``."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from chatbatch.reporting.export.layout import (
    CsvLayout,
    answer_values,
    parse_record,
    safe_text,
    value_cell,
)


class Made(NamedTuple):
    """What the cells made here (not in SQL) come from, for one row: its source record, its
    answer's fields, its ``gold_match`` cell, and the content of its further choices."""

    record: dict[str, Any]
    answer: dict[str, Any]
    gold: str | None = None
    others: list[Any] | None = None


def made_row(layout: CsvLayout, status: str, record: str | None, content: str | None,
             valid: bool | None, others: str | None) -> Made:  # fmt: skip
    """Parse what ``layout``'s made cells need of one row, and only that."""
    fields = parse_record(record) if layout.needs_record else {}
    made = Made(fields, answer_values(content, valid) if layout.needs_answer else {})
    if layout.needs_gold:
        made = made._replace(gold=layout.gold_cell(status, fields, content, valid))
    if layout.needs_choices:
        made = made._replace(others=orjson.loads(others) if others else [])
    return made


def made_cell(kind: str, key: str, made: Made) -> str | None:
    """The cell of a column made here rather than in SQL: a record value, an answer field, the
    row's ``gold_match`` (already a cell), or the content of choice ``key`` (2, 3, …)."""
    if kind == "gold":
        return made.gold
    if kind == "choice":
        others = made.others or []
        at = int(key) - 2
        return safe_text(others[at]) if at < len(others) else None
    return value_cell((made.record if kind == "record" else made.answer).get(key))
