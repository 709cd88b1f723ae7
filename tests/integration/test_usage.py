"""Usage and cost by batch, model and day on PostgreSQL, after real runs against the simulator.

Every expectation is computed here from ``simulator.answers.expected_usage`` and the prices
written in this file, not from chatbatch's own cost maths.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from engine_helpers import load, run_to_end
from sqlalchemy import Engine, select, text, update

from chatbatch.operations.retry import retry as retry_batch
from chatbatch.reporting.summary import cost_summary
from chatbatch.reporting.usage import Grouping, usage_report
from chatbatch.rules.pricing import ModelPrice, PriceTable
from chatbatch.rules.states import RequestStatus
from chatbatch.store import reads
from chatbatch.store.db import db_now
from chatbatch.store.models import past_results_table as past
from chatbatch.store.models import requests_table as r
from simulator.answers import expected_usage

M = Decimal(1_000_000)
PRICES = PriceTable(
    currency="USD",
    models={
        "gpt-4o-mini": ModelPrice(
            input=Decimal("0.15"),
            cached_input=Decimal("0.075"),
            output=Decimal("0.6"),
            per_unit=Decimal("0.025"),
        ),
        "deepseek-r1": ModelPrice(
            input=Decimal("0.55"), output=Decimal("2.19"), reasoning=Decimal("3.1")
        ),
    },
)
TOKENS = ("prompt_tokens", "completion_tokens", "total_tokens", "billed_units")
OLD_DAY = datetime(2026, 1, 1, 23, 30, tzinfo=UTC)  # 08:30 on Jan 2 in Tokyo


def body_for(i: int, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "Label the sentiment of the review."},
            {"role": "user", "content": f"review {i}: " + "good " * (i % 7)},
        ],
    }
    if model == "deepseek-r1":
        body["thinking"] = {"type": "enabled"}
    if i % 3 == 0 and model != "deepseek-r1":  # its price has no per_unit
        body["enable_search"] = True
    return body


def write_bodies(path: Path, bodies: list[dict[str, Any]]) -> None:
    with path.open("w") as fh:
        for i, body in enumerate(bodies):
            fh.write(orjson.dumps({"custom_id": f"c{i}", "body": body}).decode() + "\n")


def usage_of(body: dict[str, Any]) -> dict[str, int]:
    u = expected_usage(body)
    return {
        **{k: u[k] for k in TOKENS},
        "cached_tokens": u["prompt_tokens_details"]["cached_tokens"],
        "reasoning_tokens": u["completion_tokens_details"]["reasoning_tokens"],
    }


def summed(bodies: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for body in bodies:
        for key, value in usage_of(body).items():
            totals[key] += value
    return dict(totals)


def cost_by_hand(bodies: list[dict[str, Any]]) -> Decimal | None:
    """The cost written out: cached ⊂ prompt, reasoning ⊂ completion; None if a model has no
    price in PRICES."""
    total = Decimal(0)
    for body in bodies:
        u = usage_of(body)
        uncached = u["prompt_tokens"] - u["cached_tokens"]
        visible = u["completion_tokens"] - u["reasoning_tokens"]
        if body["model"] == "gpt-4o-mini":
            total += (
                uncached * Decimal("0.15")
                + u["cached_tokens"] * Decimal("0.075")
                + visible * Decimal("0.6")
                + u["reasoning_tokens"] * Decimal("0.6")
            ) / M + u["billed_units"] * Decimal("0.025")
        elif body["model"] == "deepseek-r1" and not u["billed_units"]:  # no per_unit price
            total += (
                (uncached + u["cached_tokens"]) * Decimal("0.55")
                + visible * Decimal("2.19")
                + u["reasoning_tokens"] * Decimal("3.1")
            ) / M
        else:
            return None
    return total


def tokens_of(row: dict[str, Any]) -> dict[str, int]:
    return {k: row[k] for k in (*TOKENS, "cached_tokens", "reasoning_tokens")}


def money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.normalize():f}"


def report(db: Engine, by: Grouping, batch_id: str | None = None) -> dict[str, Any]:
    with db.connect() as conn:
        conn.execute(text("SET TIME ZONE 'Asia/Tokyo'"))  # the day must still be the UTC one
        return usage_report(conn, by=by, batch_id=batch_id, prices=PRICES).as_dict()


@pytest.fixture
def two_batches(pg, engine, sim, tmp_path):
    """Batch "retried": 8 priced requests on two models, run, all retried (so every answer is
    billed twice, once in past_results), run again; two of its archived answers moved to
    OLD_DAY. Batch "mixed": 6 requests, two of them on a model without a price."""
    retried = [body_for(i, "gpt-4o-mini" if i % 2 else "deepseek-r1") for i in range(8)]
    mixed = [body_for(i, ["gpt-4o-mini", "gpt-4o-mini", "mystery-1"][i % 3]) for i in range(6)]
    write_bodies(tmp_path / "retried.jsonl", retried)
    write_bodies(tmp_path / "mixed.jsonl", mixed)
    a = load(pg, tmp_path / "retried.jsonl")
    run_to_end(engine, pg, a)
    with pg.begin() as conn:
        result = retry_batch(conn, a, now=db_now(conn), statuses=[RequestStatus.SUCCEEDED])
    assert result.changed == 8
    assert run_to_end(engine, pg, a)["counts"]["succeeded"] == 8
    moved = [0, 1]  # custom ids c0 (deepseek-r1) and c1 (gpt-4o-mini)
    with pg.begin() as conn:
        ids = select(r.c.id).where(r.c.batch_id == a, r.c.line_no.in_([i + 1 for i in moved]))
        changed = conn.execute(
            update(past).where(past.c.request_id.in_(ids)).values(completed_at=OLD_DAY)
        ).rowcount
    assert changed == 2
    b = load(pg, tmp_path / "mixed.jsonl")
    assert run_to_end(engine, pg, b)["counts"]["succeeded"] == 6
    with pg.connect() as conn:
        names = {reads.resolve_batch(conn, x).name: x for x in (a, b)}
    return {"a": a, "b": b, "names": names, "retried": retried, "mixed": mixed, "moved": moved}


def test_usage_and_cost_by_batch_count_retried_answers_and_flag_unpriced(pg, two_batches):
    t = two_batches
    result = report(pg, Grouping.BATCH)
    rows = result["rows"]
    assert [row["batch_id"] for row in rows] == [t["a"], t["b"]]  # in creation order
    assert [row["key"] for row in rows] == list(t["names"])
    twice = t["retried"] * 2
    assert tokens_of(rows[0]) == summed(twice)
    assert rows[0]["answers"] == 16
    assert rows[0]["cost"] == money(cost_by_hand(twice))
    assert rows[0]["cost"] is not None
    assert tokens_of(rows[1]) == summed(t["mixed"])
    assert rows[1]["cost"] is None  # mystery-1 has no price: unknown, never 0
    assert rows[1]["cost_priced_part"] == money(
        cost_by_hand([x for x in t["mixed"] if x["model"] != "mystery-1"])
    )
    assert tokens_of(result["total"]) == summed(twice + t["mixed"])
    assert result["total"]["cost"] is None
    assert result["unpriced_models"] == {"mystery-1": "no price"}


def test_usage_by_model_and_day_equal_the_independent_sums(pg, two_batches):
    t = two_batches
    everything = t["retried"] * 2 + t["mixed"]
    by_model = report(pg, Grouping.MODEL)
    assert [row["key"] for row in by_model["rows"]] == ["deepseek-r1", "gpt-4o-mini", "mystery-1"]
    for row in by_model["rows"]:
        bodies = [x for x in everything if x["model"] == row["key"]]
        assert tokens_of(row) == summed(bodies), row["key"]
        assert row["answers"] == len(bodies)
        assert row["cost"] == money(cost_by_hand(bodies)), row["key"]
    assert by_model["rows"][1]["reasoning_tokens"] == 0
    assert by_model["rows"][0]["reasoning_tokens"] > 0
    assert by_model["rows"][1]["cached_tokens"] > 0 and by_model["rows"][1]["billed_units"] > 0

    by_day = report(pg, Grouping.DAY)
    with pg.connect() as conn:
        today = db_now(conn).astimezone(UTC).date().isoformat()
    old = [t["retried"][i] for i in t["moved"]]
    assert [row["key"] for row in by_day["rows"]] == ["2026-01-01", today]
    assert tokens_of(by_day["rows"][0]) == summed(old)
    assert by_day["rows"][0]["cost"] == money(cost_by_hand(old))
    rest = t["retried"] + [x for i, x in enumerate(t["retried"]) if i not in t["moved"]]
    assert tokens_of(by_day["rows"][1]) == summed(rest + t["mixed"])
    assert by_day["rows"][1]["cost"] is None


def test_one_batch_only_and_current_round_only(pg, two_batches):
    t = two_batches
    one = report(pg, Grouping.MODEL, t["a"])
    assert [row["key"] for row in one["rows"]] == ["deepseek-r1", "gpt-4o-mini"]
    assert tokens_of(one["total"]) == summed(t["retried"] * 2)
    assert one["total"]["cost"] == money(cost_by_hand(t["retried"] * 2))
    assert one["unpriced_models"] == {}
    with pg.connect() as conn:
        current = usage_report(
            conn, by=Grouping.BATCH, batch_id=t["a"], prices=PRICES, include_past=False
        ).as_dict()
    assert tokens_of(current["total"]) == summed(t["retried"])
    assert current["total"]["answers"] == 8


def test_status_cost_so_far_and_projection(pg, two_batches):
    t = two_batches
    with pg.connect() as conn:
        done = cost_summary(conn, reads.resolve_batch(conn, t["a"]), prices=PRICES)
    spent = cost_by_hand(t["retried"] * 2)
    assert done == {
        "currency": "USD",
        "so_far": money(spent),
        "projected_total": money(spent),  # nothing open: the projection is the spend
        "unpriced_models": {},
    }
    # Take two requests of the current round back to "not finished": the projection adds the
    # current round's cost per finished request for each of them.
    with pg.begin() as conn:
        conn.execute(
            update(r)
            .where(r.c.batch_id == t["a"], r.c.line_no.in_([1, 2]))
            .values(
                status=RequestStatus.SUBMITTED,
                completed_at=None,
                **dict.fromkeys(("prompt_tokens", "completion_tokens", "total_tokens"), None),
                **dict.fromkeys(("reasoning_tokens", "cached_tokens", "billed_units"), None),
            )
        )
    with pg.connect() as conn:
        partial = cost_summary(conn, reads.resolve_batch(conn, t["a"]), prices=PRICES)
    finished = t["retried"][2:]
    so_far = cost_by_hand(t["retried"] + finished)
    assert so_far is not None
    per_request = cost_by_hand(finished) / 6
    assert partial["so_far"] == money(so_far)
    projected = Decimal(partial["projected_total"])
    assert abs(projected - (so_far + 2 * per_request)) < Decimal("0.000001")
    assert projected > so_far

    with pg.connect() as conn:
        unknown = cost_summary(conn, reads.resolve_batch(conn, t["b"]), prices=PRICES)
    assert unknown["so_far"] is None and unknown["projected_total"] is None
    assert unknown["unpriced_models"] == {"mystery-1": "no price"}


def test_usage_by_provider_counts_retried_answers_under_the_provider_that_gave_them(
    pg, two_batches
):
    t = two_batches
    everything = t["retried"] * 2 + t["mixed"]
    by_provider = report(pg, Grouping.PROVIDER)
    assert [row["key"] for row in by_provider["rows"]] == ["default"]  # archived ones too
    assert by_provider["rows"][0]["answers"] == len(everything)
    assert tokens_of(by_provider["rows"][0]) == summed(everything)
