"""``chatbatch report`` on PostgreSQL (and the same figures on SQLite): a batch with rows in every
state is written straight into the tables, and every number in the HTML is checked against what
this file put there, not against chatbatch's own aggregates."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, insert

from chatbatch.reporting.report_data import bucket_width, collect, nice_step, recent_errors
from chatbatch.rules.pricing import ModelPrice, PriceTable
from chatbatch.store.db import make_engine
from chatbatch.store.migrate import upgrade
from chatbatch.store.models import batches_table, requests_table
from cli.main import cli

T0 = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
XSS_ID = "<script>alert(1)</script>"
XSS_MESSAGE = 'bad <b>answer</b> & "quotes" <img src=x onerror=alert(2)>'
PRICES = PriceTable(
    currency="EUR",
    models={
        "gpt-4o-mini": ModelPrice(input=Decimal("0.15"), output=Decimal("0.6")),
        "deepseek-r1": ModelPrice(input=Decimal("0.55"), output=Decimal("2.19")),
    },
)
PRICES_TOML = """\
currency = "USD"
[models."*"]
input = 1
output = 2
"""
# Latencies 1..100 s for 100 succeeded rows: p50 = 50, p90 = 90, p99 = 99 (percentile_disc).
SUCCEEDED = 100
FAILED = {"task_failed": 4, "rate_limited": 2}
EXPIRED = 3
CANCELLED = 2
REUSED = 4
QUEUED = 5
SUBMITTED = 3
INVALID = 7  # succeeded rows whose answer failed the schema
TOTAL = SUCCEEDED + sum(FAILED.values()) + EXPIRED + CANCELLED + REUSED + QUEUED + SUBMITTED


def build_batch(
    engine: Engine, *, name: str = "nightly", schema: bool = True, prices: bool = True
) -> str:
    """One batch with rows in every state; returns its id."""
    batch_id = f"batch_{name}"
    rows: list[dict[str, Any]] = []

    def row(status: str, **values: Any) -> None:
        i = len(rows)
        rows.append(
            {
                "batch_id": batch_id,
                "line_no": i + 1,
                "custom_id": f"r{i:03d}",
                "model": "gpt-4o-mini",
                "body": "{}",
                "status": status,
                "due_at": T0,
                **values,
            }
        )

    for i in range(SUCCEEDED):
        submitted = T0 + timedelta(seconds=i * 3)
        row(
            "succeeded",
            model="deepseek-r1" if i % 4 == 0 else "gpt-4o-mini",
            submitted_at=submitted,
            completed_at=submitted + timedelta(seconds=i + 1),
            prompt_tokens=100,
            completion_tokens=50,
            total_tokens=150,
            schema_valid=i >= INVALID if schema else None,
            schema_error="label: bad" if schema and i < INVALID else None,
        )
    done = T0 + timedelta(minutes=6)
    for code, n in FAILED.items():
        for k in range(n):
            row("failed", error_code=code, error_message=f"{code} number {k}", completed_at=done)
    rows[-1]["custom_id"] = XSS_ID
    rows[-1]["error_message"] = XSS_MESSAGE
    for _ in range(EXPIRED):
        row("expired", error_code="expired", error_message="not fetched", completed_at=done)
    for _ in range(CANCELLED):
        row("cancelled", error_code="cancelled", completed_at=done)
    for _ in range(REUSED):
        row("reused", completed_at=T0, reused_from=1, schema_valid=True if schema else None)
    for _ in range(QUEUED):
        row("queued", error_code="rate_limited", error_message="429, retrying")
    for _ in range(SUBMITTED):
        row("submitted", submitted_at=T0)
    assert len(rows) == TOTAL
    columns = {key for values in rows for key in values}
    rows = [dict.fromkeys(columns) | values for values in rows]  # one shape for executemany
    with engine.begin() as conn:
        conn.execute(
            insert(batches_table).values(
                id=batch_id,
                name=name,
                status="running",
                total=TOTAL,
                created_at=T0,
                source="reviews.csv",
                response_schema='{"type": "object"}' if schema else None,
                prices=PRICES.model_dump_json() if prices else None,
            )
        )
        conn.execute(insert(requests_table), rows)
    return batch_id


class Metrics(HTMLParser):
    """Collects ``data-metric``/``data-value`` pairs, custom ids shown, and asset references."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.assets: list[str] = []
        self.scripts = 0
        self._in_custom_id = False
        self.custom_ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if "data-metric" in found:
            self.values[found["data-metric"] or ""] = found.get("data-value") or ""
        for key in ("src", "href"):
            if found.get(key):
                self.assets.append(f"{tag} {key}={found[key]}")
        self.scripts += tag == "script"
        self._in_custom_id = "custom-id" in (found.get("class") or "")

    def handle_data(self, data: str) -> None:
        if self._in_custom_id:
            self.custom_ids.append(data)
            self._in_custom_id = False


def report_html(tmp_path: Path, *args: str) -> str:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", "nightly", "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    assert "wrote the report of nightly" in result.output
    return out.read_text("utf-8")


def parsed(html: str) -> Metrics:
    parser = Metrics()
    parser.feed(html)
    return parser


def test_report_numbers(db: Engine, tmp_path: Path) -> None:
    build_batch(db)
    html = report_html(tmp_path)
    m = parsed(html).values
    expected_counts = {
        "succeeded": SUCCEEDED,
        "failed": sum(FAILED.values()),
        "expired": EXPIRED,
        "cancelled": CANCELLED,
        "reused": REUSED,
        "queued": QUEUED,
        "submitted": SUBMITTED,
        "submitting": 0,
    }
    for state, n in expected_counts.items():
        assert m[f"count.{state}"] == str(n), state
    finished = SUCCEEDED + sum(FAILED.values()) + EXPIRED + CANCELLED + REUSED
    assert m["finished"] == str(finished)
    assert m["total"] == str(TOTAL)
    assert m["reused"] == str(REUSED)
    # latency: 1..100 seconds
    assert float(m["latency.p50"]) == 50
    assert float(m["latency.p90"]) == 90
    assert float(m["latency.p99"]) == 99
    assert m["latency.count"] == str(SUCCEEDED)
    # errors: failed and expired, by code
    assert m["error.task_failed"] == "4"
    assert m["error.rate_limited"] == "2"
    assert m["error.expired"] == str(EXPIRED)
    assert "error.cancelled" not in m
    assert m["errors.total"] == str(sum(FAILED.values()) + EXPIRED)
    # answers that broke the schema are listed too, but are not failures
    if "schema.valid" in m:
        assert m["error.schema_invalid"] == str(INVALID)
    # schema: 7 of the succeeded invalid, reused rows valid
    assert m["schema.valid"] == str(SUCCEEDED - INVALID + REUSED)
    assert m["schema.invalid"] == str(INVALID)
    assert float(m["schema.pass_rate"]) == pytest.approx(
        (SUCCEEDED - INVALID + REUSED) / (SUCCEEDED + REUSED)
    )
    # usage and cost by model, with the price table stored with the batch (EUR)
    deepseek = SUCCEEDED // 4
    mini = SUCCEEDED - deepseek
    assert m["usage.deepseek-r1.answers"] == str(deepseek)
    assert m["usage.gpt-4o-mini.answers"] == str(mini)
    assert m["usage.total_tokens"] == str(150 * SUCCEEDED)
    cost_deepseek = deepseek * (100 * Decimal("0.55") + 50 * Decimal("2.19")) / 1_000_000
    cost_mini = mini * (100 * Decimal("0.15") + 50 * Decimal("0.6")) / 1_000_000
    assert Decimal(m["cost.deepseek-r1"]) == cost_deepseek
    assert Decimal(m["cost.total"]) == cost_deepseek + cost_mini
    assert "Cost (EUR)" in html


def test_prices_option_wins_over_the_stored_table(db: Engine, tmp_path: Path) -> None:
    build_batch(db)
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES_TOML)
    m = parsed(report_html(tmp_path, "--prices", str(prices))).values
    assert Decimal(m["cost.total"]) == SUCCEEDED * Decimal(100 * 1 + 50 * 2) / 1_000_000


def test_report_without_prices_or_schema(db: Engine, tmp_path: Path) -> None:
    build_batch(db, schema=False, prices=False)
    html = report_html(tmp_path)
    m = parsed(html).values
    assert "cost.total" not in m
    assert "schema.valid" not in m
    assert "No price table was given" in html
    assert m["usage.total_tokens"] == str(150 * SUCCEEDED)


def test_user_text_is_escaped_and_nothing_is_fetched(db: Engine, tmp_path: Path) -> None:
    build_batch(db)
    html = report_html(tmp_path)
    report = parsed(html)
    assert XSS_ID not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "&lt;b&gt;answer&lt;/b&gt; &amp; &#34;quotes&#34;" in html
    assert XSS_ID in report.custom_ids  # shown, as text
    assert report.scripts == 0
    assert report.assets == []
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", html, re.I)
    assert not re.search(r"url\(|@import", html, re.I)


def test_timeline_counts_every_finished_request(db: Engine, tmp_path: Path) -> None:
    batch_id = build_batch(db)
    with db.connect() as conn:
        from chatbatch.store import reads

        data = collect(conn, reads.resolve_batch(conn, batch_id), prices=None, now=T0)
    finished = SUCCEEDED + sum(FAILED.values()) + EXPIRED + CANCELLED + REUSED
    assert sum(sum(b.values()) for b in data.timeline.counts) == finished
    assert len(data.timeline.counts) <= 60
    assert data.timeline.start is not None and data.timeline.start <= T0
    width = data.timeline.width_seconds
    last_success = T0 + timedelta(seconds=(SUCCEEDED - 1) * 3 + SUCCEEDED)
    index = math.floor((last_success - data.timeline.start).total_seconds() / width)
    assert data.timeline.counts[index].get("succeeded", 0) >= 1
    later = T0 + timedelta(minutes=6)
    index = math.floor((later - data.timeline.start).total_seconds() / width)
    assert data.timeline.counts[index]["failed"] == sum(FAILED.values())
    assert data.timeline.counts[index]["expired"] == EXPIRED


def test_sqlite_gives_the_same_figures(db: Engine, tmp_path: Path) -> None:
    lite = make_engine(f"sqlite:///{tmp_path / 'lite.db'}", pool_size=1)
    upgrade(lite)
    results = []
    recent = []
    try:
        for engine in (db, lite):
            batch_id = build_batch(engine)
            with engine.connect() as conn:
                from chatbatch.store import reads

                batch = reads.resolve_batch(conn, batch_id)
                results.append(collect(conn, batch, prices=PRICES, now=T0))
                recent.append(recent_errors(conn, batch_id))
    finally:
        lite.dispose()
    on_pg, on_sqlite = results
    assert on_sqlite.counts == on_pg.counts
    assert on_sqlite.latency == on_pg.latency
    assert on_sqlite.timeline == on_pg.timeline
    assert on_sqlite.errors == on_pg.errors
    assert on_sqlite.schema == on_pg.schema
    assert on_sqlite.usage.total_cost == on_pg.usage.total_cost
    assert on_pg.latency.percentiles == {"0.5": 50.0, "0.9": 90.0, "0.99": 99.0}
    assert recent[0] == recent[1]
    # all three last seen at T0 + 6 min, so by code; queued rows waiting to retry count too
    assert [(e.code, e.count, e.last_message) for e in recent[0]] == [
        ("expired", EXPIRED, "not fetched"),
        ("rate_limited", 2 + QUEUED, "rate_limited number 0"),
        ("task_failed", 4, "task_failed number 0"),
    ]
    groups = {e.code: e for e in on_pg.errors}
    assert [e.code for e in on_pg.errors][:2] == ["schema_invalid", "task_failed"]  # 7, then 4
    assert len(groups["task_failed"].examples) == 3
    assert [x.message for x in groups["schema_invalid"].examples] == ["label: bad"] * 3


def test_a_batch_with_nothing_finished(db: Engine, tmp_path: Path) -> None:
    with db.begin() as conn:
        conn.execute(
            insert(batches_table).values(
                id="batch_new", name="nightly", status="running", total=2, created_at=T0
            )
        )
        conn.execute(
            insert(requests_table),
            [
                {"batch_id": "batch_new", "line_no": i, "custom_id": f"n{i}", "model": "m",
                 "body": "{}", "status": "queued", "due_at": T0}
                for i in (1, 2)
            ],
        )  # fmt: skip
    html = report_html(tmp_path)
    m = parsed(html).values
    assert m["count.queued"] == "2"
    assert m["finished"] == "0"
    assert "No request has finished yet." in html
    assert "No succeeded request" in html
    assert "No request failed or expired, and no answer broke the schema." in html
    assert "No answer with usage yet." in html


def test_unknown_batch_is_an_error(db: Engine, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", "nope", "-o", str(tmp_path / "x.html")])
    assert result.exit_code != 0
    assert "no batch" in result.output
    assert not (tmp_path / "x.html").exists()


def test_axis_helpers() -> None:
    assert bucket_width(0, 60) == 1
    assert bucket_width(3600, 60) == 120
    assert bucket_width(86400 * 10, 60) == 21600
    assert bucket_width(86400 * 100, 60) == 86400 * 2
    assert nice_step(0.3) == 0.5
    assert nice_step(3.3) == 5
    assert nice_step(2.1) == 2.5
    assert nice_step(10) == 10
