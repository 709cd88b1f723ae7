"""The query plans of the claims on a large table: index scans that stop after one chunk,
whatever N is. On ``--batches`` running batches holding N queued rows, the submission claim's
fair-share statement: one branch per batch, each an index scan of
``ix_requests_queued_batch_due`` that should stop after its candidates. On one batch of N
requests (a quarter queued, a quarter submitted, a half succeeded), both claims, as
``bench.engine_overhead`` prints them. Queued rows are due as ``chatbatch load`` writes them
(``--due load``: every row of a batch at its load time) or spread over 1000 s, a quarter past
(``--due spread``, what ``engine_overhead`` shows). Each claim's median wall time (chunks of 64,
rolled back) is printed too, with JIT and without: PostgreSQL JIT-compiles a statement whose
estimated cost passes ``jit_above_cost``.

    python -m bench.claim_plans                   # 1,000,000 queued rows over 100 batches
    python -m bench.claim_plans --due spread      # the same, due times spread
    python -m bench.claim_plans --batches 1       # 1,000,000 requests in one batch, both claims
    python -m bench.claim_plans --quick           # 20,000 queued rows over 20 batches
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, event, text

from bench.common import fresh_database
from chatbatch.store.claims import claim_for_poll, claim_for_submit
from chatbatch.store.db import db_now, make_engine

Claim = Callable[..., Any]
Statement = tuple[str, Any]  # SQL as sent to the driver, and its parameters
MIXED = ["queued", "submitted", "succeeded", "succeeded"]  # one batch: both claims have work
BATCHES_SQL = """
INSERT INTO batches (id, name, status, total, created_at)
SELECT 'plans-' || k, 'plans-' || k, 'running', :rows / :batches, now()
FROM generate_series(0, :batches - 1) AS k
"""
# Row g is row k = g / B of batch g % B: statuses are spread alike in every batch. Due times:
# all the queued rows of a batch at its load time, as ``chatbatch load`` writes them ("load"),
# or spread over 1000 s, a quarter of them past ("spread").
DUE = {
    "load": "now() - interval '1 hour' + g % :batches * interval '1 second'",
    "spread": "now() + ((g / :batches) % 1000 - 250) * interval '1 second'",
}
FILL_SQL = """
INSERT INTO requests (batch_id, line_no, custom_id, model, body, status, due_at, remote_id)
SELECT 'plans-' || g % :batches, g, 'c' || g, 'gpt-4o-mini',
       '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "review ' || g || '"}]}',
       s.status, DUE, CASE WHEN s.status = 'submitted' THEN 'task-' || g END
FROM generate_series(1, :rows) AS g,
     LATERAL (SELECT (CAST(:statuses AS text[]))[
         1 + (g / :batches) % cardinality(CAST(:statuses AS text[]))] AS status) AS s
"""


@dataclass(frozen=True)
class ClaimFigures:
    plan: list[str]  # EXPLAIN ANALYZE, costs off
    cost: float  # the planner's estimate for the whole statement
    jit_ms: float  # JIT compilation in that run (0: none)
    seconds: float  # median wall time of one claim, every statement of it
    seconds_without_jit: float


def claim_plans(
    rows: int, batches: int = 1, due: str = "spread", chunk: int = 64, repeats: int = 20
) -> dict[str, ClaimFigures]:
    """Each claim's plan and times on ``rows`` requests over ``batches`` running batches, due
    as ``DUE[due]`` says (all rolled back: nothing stays claimed)."""
    statuses = MIXED if batches == 1 else ["queued"]
    claims: dict[str, Claim] = {"claim due submissions": claim_for_submit}
    if "submitted" in statuses:
        claims["claim due polls"] = claim_for_poll
    with fresh_database() as url:
        db = make_engine(url, pool_size=1)
        with db.begin() as conn:
            params = {"rows": rows, "batches": batches, "statuses": statuses}
            conn.execute(text(BATCHES_SQL), params)
            conn.execute(text(FILL_SQL.replace("DUE", DUE[due])), params)
        with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE requests")
            conn.exec_driver_sql("ANALYZE batches")
        with db.connect() as conn:
            figures = {
                name: measured(conn, claim, chunk, repeats) for name, claim in claims.items()
            }
        db.dispose()
    return figures


def measured(conn: Connection, claim: Claim, chunk: int, repeats: int) -> ClaimFigures:
    """``claim``'s plan, JIT time and median wall time, then its time with JIT off."""
    statement = claim_statement(captured(conn, run_claim, claim, chunk))
    plan = explained(conn, statement)
    (document,) = explained(conn, statement, "ANALYZE, FORMAT JSON")
    timings = []
    for jit in ("DEFAULT", "off"):
        conn.exec_driver_sql(f"SET jit = {jit}")
        conn.commit()
        timings.append(statistics.median(timed(conn, claim, chunk) for _ in range(repeats)))
    conn.exec_driver_sql("RESET jit")
    conn.commit()
    return ClaimFigures(
        plan=plan,
        cost=document[0]["Plan"]["Total Cost"],
        jit_ms=document[0].get("JIT", {}).get("Timing", {}).get("Total", 0.0),
        seconds=timings[0],
        seconds_without_jit=timings[1],
    )


def run_claim(conn: Connection, claim: Claim, chunk: int) -> None:
    """One claim of ``chunk`` rows as a worker makes it (of its model, for submissions)."""
    model = {"model": "gpt-4o-mini"} if claim is claim_for_submit else {}
    claim(conn, now=db_now(conn), limit=chunk, lease_seconds=60, **model)


def timed(conn: Connection, claim: Claim, chunk: int) -> float:
    """Seconds one claim takes, every statement of it; rolled back."""
    with conn.begin() as transaction:
        started = time.perf_counter()
        run_claim(conn, claim, chunk)
        seconds = time.perf_counter() - started
        transaction.rollback()
    return seconds


def captured(conn: Connection, work: Callable[..., Any], *args: Any) -> list[Statement]:
    """The statements ``work(conn, *args)`` runs, in order; rolled back."""
    statements: list[Statement] = []

    def grab(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        statements.append((statement, params))

    with conn.begin() as transaction:
        event.listen(conn, "before_cursor_execute", grab)
        try:
            work(conn, *args)
        finally:
            event.remove(conn, "before_cursor_execute", grab)
        transaction.rollback()
    return statements


def claim_statement(statements: list[Statement]) -> Statement:
    """The claim itself: the first UPDATE of requests (after its CTEs). A fair-share claim
    reads the running batches first, and runs a second UPDATE only if its rows were taken."""
    return next(s for s in statements if "UPDATE requests SET" in s[0])


def explained(conn: Connection, statement: Statement, options: str = "ANALYZE, COSTS OFF") -> Any:
    """EXPLAIN (``options``) of ``statement``: its lines (or one JSON document), rolled back."""
    sql, params = statement
    with conn.begin() as transaction:
        lines = list(conn.exec_driver_sql(f"EXPLAIN ({options}) {sql}", params).scalars())
        transaction.rollback()
    return lines


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def folded(lines: list[str]) -> list[str]:
    """The plan with the UNION ALL branches shaped like the first one counted, not printed."""
    out: list[str] = []
    first, alike, i = "", 0, 0
    while i < len(lines):
        depth = _indent(lines[i])
        if not lines[i].lstrip().startswith("->  Subquery Scan on anon_"):
            if alike:
                out.append(f"{' ' * depth}  ... and {alike} more branches like the first")
                alike = 0
            out.append(lines[i])
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if _indent(lines[j]) <= depth), len(lines))
        shape = re.sub(r"\(actual[^)]*\)|'[^']*'|\d+", "", "\n".join(lines[i:end]))
        if first and shape == first:
            alike += 1
        else:
            first = first or shape
            out += lines[i:end]
        i = end
    return out


def summary(lines: list[str]) -> str:
    """What the plan must show: a limited index scan of ``ix_requests_queued_batch_due`` per
    batch, and scans of ``requests`` that read about a chunk's candidates, not the queue."""
    plan = "\n".join(lines)
    branch = (
        r"->  Limit .*\n\s*->  WindowAgg .*\n\s*->  Index Scan using ix_requests_queued_batch_due"
    )
    scans = re.findall(
        r"(\w+(?: \w+)* Scan)(?: using \w+)? on requests .*rows=(\d+) loops=(\d+)", plan
    )
    read = [(int(rows) * int(loops), kind) for kind, rows, loops in scans]
    most, kind = max(read, default=(0, "none"))
    dropped = re.findall(r"Rows Removed by Filter: (\d+)", plan)
    branches = (
        f"{len(re.findall(branch, plan))} branch(es) Limit -> Index Scan using "
        "ix_requests_queued_batch_due; "
        if "CTE ranked" in plan
        else ""
    )
    return (
        f"{branches}{plan.count('Seq Scan on requests')} Seq Scan(s) on requests; "
        f"{len(scans)} scans of requests return {sum(n for n, _ in read):,} rows (the most by "
        f"one scan: {most:,}, {kind}), filters drop {sum(map(int, dropped)):,} more"
    )


def print_claim_plans(rows: int, batches: int = 1, due: str = "spread") -> None:
    """Each claim's plan, what it reads, and its times (``bench.engine_overhead`` prints this for
    one batch, due times spread)."""
    spread = (
        f"{rows:,} requests" if batches == 1 else f"{rows:,} queued rows over {batches} batches"
    )
    when = {"load": "each batch's due at its load time", "spread": "due times spread"}[due]
    for name, figures in claim_plans(rows, batches, due).items():
        print(f"  {name} on {spread}, {when}:")
        for line in folded(figures.plan):
            print(f"    {line}")
        print(f"    check: {summary(figures.plan)}")
        print(
            f"    estimated cost {figures.cost:,.0f}; JIT compilation {figures.jit_ms:.1f} ms; "
            f"median claim of 64: {figures.seconds * 1000:.2f} ms, "
            f"{figures.seconds_without_jit * 1000:.2f} ms with jit = off"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--due", choices=sorted(DUE), default="load")
    parser.add_argument("--quick", action="store_true", help="20,000 rows over 20 batches")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.batches = 20_000, 20
    print_claim_plans(args.rows, args.batches, args.due)


if __name__ == "__main__":
    main()
