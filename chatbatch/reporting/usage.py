"""Token usage and its cost, summed by batch, model, day or provider, on PostgreSQL and SQLite
alike.

Every provider answer counts once: the current outcome of each request and every earlier outcome
that ``chatbatch retry`` replaced (``past_results``; the provider billed those too), so the totals
match ``status``. A row counts as an answer when it carries any usage. The model is the one the
request asked for (what a price table names); the day is the UTC date the answer was stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Select,
    Table,
    func,
    null,
    select,
    union_all,
)

from chatbatch.rules.completions import USAGE_COLUMNS
from chatbatch.rules.pricing import Cost, PriceTable, Usage, cost_by_model, format_money
from chatbatch.store.dialect import utc_day
from chatbatch.store.models import all_requests_table as r
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import past_results_table as p


class Grouping(StrEnum):
    BATCH = "batch"
    MODEL = "model"
    DAY = "day"
    PROVIDER = "provider"


@dataclass(frozen=True)
class UsageGroup:
    """One line of a usage report: a batch, a model or a day, with usage split by model (prices
    are per model, so that is what cost needs)."""

    key: str | None
    by_model: Mapping[str, Usage]
    answers: int
    batch_id: str | None = None

    @property
    def usage(self) -> Usage:
        return Usage.total(self.by_model.values())


@dataclass(frozen=True)
class UsageReport:
    """Usage groups and, given a price table, their cost."""

    by: Grouping
    groups: list[UsageGroup]
    prices: PriceTable | None = None
    costs: list[Cost] = field(default_factory=list)
    total_cost: Cost | None = None

    @property
    def unpriced(self) -> dict[str, str]:
        """Models whose cost is unknown, with the reason."""
        return dict(self.total_cost.missing) if self.total_cost else {}

    def as_dict(self) -> dict[str, Any]:
        """The ``usage --json`` object; money is decimal text (exact), null when unknown."""
        rows = []
        costs: list[Cost | None] = [*self.costs] or [None] * len(self.groups)
        for group, cost in zip(self.groups, costs, strict=True):
            row: dict[str, Any] = {"key": group.key}
            if self.by == Grouping.BATCH:
                row["batch_id"] = group.batch_id
            rows.append(row | _numbers(group.answers, group.usage, cost))
        answers = sum(g.answers for g in self.groups)
        everything = Usage.total(g.usage for g in self.groups)
        return {
            "by": self.by.value,
            "currency": self.prices.currency if self.prices else None,
            "rows": rows,
            "total": _numbers(answers, everything, self.total_cost),
            "unpriced_models": self.unpriced,
        }


def usage_report(
    conn: Connection,
    *,
    by: Grouping,
    batch_id: str | None = None,
    prices: PriceTable | None = None,
    include_past: bool = True,
) -> UsageReport:
    """Usage (and cost, with ``prices``) of one batch or all, one group per batch/model/day."""
    groups = usage_groups(conn, by=by, batch_id=batch_id, include_past=include_past)
    if prices is None:
        return UsageReport(by, groups)
    costs = [cost_by_model(g.by_model, prices) for g in groups]
    everything: dict[str, Usage] = {}
    for group in groups:
        for model, usage in group.by_model.items():
            everything[model] = everything.get(model, Usage()) + usage
    return UsageReport(by, groups, prices, costs, cost_by_model(everything, prices))


def usage_groups(
    conn: Connection, *, by: Grouping, batch_id: str | None = None, include_past: bool = True
) -> list[UsageGroup]:
    """Summed usage per (group, model), in one GROUP BY over current and archived answers."""
    parts = [_answers(r, by=by, batch_id=batch_id)]
    if include_past:
        parts.append(_answers(p, by=by, batch_id=batch_id))
    answers = union_all(*parts).subquery("answers")
    keys = (answers.c.sort, answers.c.key, answers.c.batch_id, answers.c.model)
    sums = (func.coalesce(func.sum(answers.c[name]), 0) for name in USAGE_COLUMNS)
    query = select(*keys, func.count(), *sums).group_by(*keys).order_by(*keys)
    groups: dict[tuple[Any, Any], UsageGroup] = {}
    for _sort, key, batch, model, count, *totals in conn.execute(query):
        usage = Usage(**{name: int(v) for name, v in zip(USAGE_COLUMNS, totals, strict=True)})
        group = groups.get((key, batch)) or UsageGroup(key, {}, 0, batch)
        groups[(key, batch)] = UsageGroup(
            key, {**group.by_model, model: usage}, group.answers + int(count), batch
        )
    return list(groups.values())


def _answers(table: Table, *, by: Grouping, batch_id: str | None) -> Select[Any]:
    """One row per stored answer in ``table`` (requests or past_results): its group key, batch,
    model and usage. ``sort`` orders the groups: batches by creation, the others by key."""
    source: FromClause = table if table is r else table.join(r, r.c.id == table.c.request_id)
    key: ColumnElement[Any]
    batch: ColumnElement[Any]
    sort: ColumnElement[Any]
    if by == Grouping.BATCH:
        source = source.join(b, b.c.id == table.c.batch_id)
        key, batch, sort = b.c.name, b.c.id, b.c.created_at
    else:
        key = _key_column(table, by)
        batch, sort = null(), key
    has_usage = func.coalesce(*(table.c[name] for name in USAGE_COLUMNS)).is_not(None)
    query = (
        select(
            sort.label("sort"),
            key.label("key"),
            batch.label("batch_id"),
            r.c.model.label("model"),
            *(table.c[name].label(name) for name in USAGE_COLUMNS),
        )
        .select_from(source)
        .where(has_usage)
    )
    return query if batch_id is None else query.where(table.c.batch_id == batch_id)


def _key_column(table: Table, by: Grouping) -> ColumnElement[Any]:
    """What an answer is grouped by: its model, the UTC day it was stored, or the provider
    that gave it (empty for answers stored before providers were recorded)."""
    if by == Grouping.MODEL:
        return r.c.model
    if by == Grouping.PROVIDER:
        return table.c.provider
    return utc_day(table.c.completed_at)


def _numbers(answers: int, usage: Usage, cost: Cost | None) -> dict[str, Any]:
    numbers: dict[str, Any] = {"answers": answers, **usage.as_dict()}
    numbers["cost"] = format_money(cost.amount) if cost else None
    if cost and cost.amount is None:  # at least this much; the rest has no price
        numbers["cost_priced_part"] = format_money(cost.priced)
    return numbers
