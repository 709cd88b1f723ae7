"""Two batches of the same rows compared (prompt v1 against v2, model A against model B,
yesterday against today): joined on ``custom_id`` or a source column, how often their labels
agree and Cohen's kappa, a confusion table of A's labels against B's, which rows changed, and
each batch's own figures. Each batch is read once, in blocks; memory holds one label per row."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, select

from chatbatch.errors import ChatbatchError
from chatbatch.reporting.quality import gold_label, row_answer, streamed
from chatbatch.rules.quality import ANSWERED, NO_ANSWER, agreement
from chatbatch.rules.structured import first_label_property
from chatbatch.store.models import all_requests_table as r


@dataclass
class Side:
    """What one batch's rows give, by join key: the label of its answer (None: no usable
    answer), its gold label where it has one, and the figures of the batch as a whole."""

    labels: dict[str, str | None] = field(default_factory=dict)
    golds: dict[str, str] = field(default_factory=dict)
    valid: int = 0
    invalid: int = 0
    latencies: list[float] = field(default_factory=list)


def compared_field(batch: Any, given: str | None) -> str | None:
    """The answer field compared: ``--field``, else the one A is scored on against gold, else
    its schema's first text or enum property; None compares whole answers."""
    if given is not None:
        return given
    if batch.gold_field is not None:
        return str(batch.gold_field)
    if batch.response_schema:
        return first_label_property(orjson.loads(batch.response_schema))
    return None


def read_side(conn: Connection, batch: Any, *, field: str | None, key: str | None) -> Side:
    """Every row of ``batch`` by its join key (``custom_id``, or the source column ``key``):
    ChatbatchError naming the batch when a row has no such column or two rows share a key."""
    side = Side()
    for row in _rows(conn, batch.id):
        joined = _key_of(row, key, batch.name)
        if joined in side.labels:
            raise ChatbatchError(
                f"{batch.name}: two rows have the key {joined!r}; join on a "
                "column whose values are unique (--key)"
            )
        side.labels[joined] = row_answer(
            row.status, row.content, row.schema_valid, field=field, batch=batch
        )
        if batch.gold_column and (gold := gold_label(row.record, batch)) is not None:
            side.golds[joined] = gold
        _count(side, row)
    return side


def _rows(conn: Connection, batch_id: str) -> Iterator[Any]:
    """The batch's rows in input order, streamed in blocks."""
    query = select(
        r.c.custom_id, r.c.status, r.c.record, r.c.content, r.c.schema_valid,
        r.c.submitted_at, r.c.completed_at,
    ).where(r.c.batch_id == batch_id).order_by(r.c.line_no)  # fmt: skip
    return streamed(conn, query)


def _key_of(row: Any, key: str | None, batch_name: str) -> str:
    """The row's join key: its custom_id, or the value of its source column ``key``."""
    if key is None:
        return str(row.custom_id)
    record = orjson.loads(row.record) if row.record else {}
    if not isinstance(record, dict) or key not in record:
        raise ChatbatchError(f"{batch_name}: row {row.custom_id!r} has no column {key!r} (--key)")
    value = record[key]
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _count(side: Side, row: Any) -> None:
    """Schema verdicts and the latency of answered rows, for the batch's own figures."""
    if row.status not in ANSWERED:
        return
    side.valid += row.schema_valid is True
    side.invalid += row.schema_valid is False
    if row.submitted_at is not None and row.completed_at is not None:
        side.latencies.append((row.completed_at - row.submitted_at).total_seconds())


@dataclass(frozen=True)
class Comparison:
    """A against B on the joined rows (``changed``: keys whose label differs, in A's order)."""

    joined: int
    only_a: int
    only_b: int
    compared: int  # joined rows both answered: what agreement and kappa are over
    agreement: float | None
    kappa: float | None
    confusion: dict[str, dict[str, int]]
    changed: list[str]


def compare_sides(a: Side, b: Side) -> Comparison:
    """Join ``a`` and ``b`` on their keys and measure how their labels agree."""
    joined = [key for key in a.labels if key in b.labels]
    pairs: Counter[tuple[str, str | None]] = Counter()
    for key in joined:
        first, second = a.labels[key], b.labels[key]
        if first is not NO_ANSWER and second is not NO_ANSWER:
            pairs[(first, second)] += 1
    scored = agreement(pairs)  # the same figures as gold scoring, A standing for gold
    return Comparison(
        joined=len(joined),
        only_a=len(a.labels) - len(joined),
        only_b=len(b.labels) - len(joined),
        compared=scored.gold_rows,
        agreement=scored.accuracy,
        kappa=scored.kappa,
        confusion=scored.confusion,
        changed=[key for key in joined if a.labels[key] != b.labels[key]],
    )


def side_stats(side: Side, other: Side, batch: Any, cost: str | None) -> dict[str, Any]:
    """One batch's own figures: answered, schema pass rate, accuracy against its gold labels on
    the joined rows where both batches have one, cost so far, median latency."""
    answered = sum(1 for label in side.labels.values() if label is not NO_ANSWER)
    judged = side.valid + side.invalid
    both_gold = [key for key in side.golds if key in other.golds]
    agreed = sum(1 for key in both_gold if side.labels[key] == side.golds[key])
    return {
        "batch": batch.name,
        "rows": len(side.labels),
        "answered": answered,
        "schema_pass_rate": side.valid / judged if judged else None,
        "gold_rows": len(both_gold),
        "accuracy": agreed / len(both_gold) if both_gold else None,
        "cost": cost,
        "median_latency_seconds": statistics.median(side.latencies) if side.latencies else None,
    }


def comparison_json(
    a: Any, b: Any, field_name: str | None, result: Comparison, stats: tuple[dict, dict]
) -> dict[str, Any]:
    """What ``compare --json`` prints."""
    return {
        "a": a.name,
        "b": b.name,
        "field": field_name,
        "joined": result.joined,
        "only_a": result.only_a,
        "only_b": result.only_b,
        "compared": result.compared,
        "agreement": result.agreement,
        "kappa": result.kappa,
        "confusion": result.confusion,
        "changed": len(result.changed),
        "a_stats": stats[0],
        "b_stats": stats[1],
    }


@dataclass(frozen=True)
class BatchComparison:
    """Everything ``compare`` and ``report --compare`` show: the two sides, how they agree, and
    the JSON object (``comparison_json``)."""

    sides: tuple[Side, Side]
    result: Comparison
    report: dict[str, Any]


def compare_batches(
    conn: Connection,
    first: Any,
    second: Any,
    *,
    field: str | None,
    key: str | None,
    cost_of: Callable[[Any], str | None],
) -> BatchComparison:
    """Batch ``first`` (A) against ``second`` (B) on ``field`` (``compared_field``), joined on
    ``key``; ``cost_of`` gives a batch's cost so far as text (None: unpriced)."""
    name = compared_field(first, field)
    sides = (
        read_side(conn, first, field=name, key=key),
        read_side(conn, second, field=name, key=key),
    )
    result = compare_sides(*sides)
    stats = (
        side_stats(sides[0], sides[1], first, cost_of(first)),
        side_stats(sides[1], sides[0], second, cost_of(second)),
    )
    return BatchComparison(sides, result, comparison_json(first, second, name, result, stats))


def changed_rows(conn: Connection, batch: Any, keys: set[str], key: str | None) -> dict:
    """The record and raw answer of ``batch``'s rows whose join key is in ``keys``: what
    ``compare -o`` writes of each changed row (memory: the changed rows only)."""
    found = {}
    for row in _rows(conn, batch.id):
        joined = _key_of(row, key, batch.name)
        if joined in keys:
            found[joined] = (orjson.loads(row.record) if row.record else {}, row.content, row)
    return found
