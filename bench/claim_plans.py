"""The query plans of the two claims (due submissions, due polls) on a table of N requests,
three quarters of them not due: both must be index scans that stop after one chunk, whatever
N is. Printed by ``bench.engine_overhead``; also runnable alone.

    python -m bench.claim_plans [--rows 1000000]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, event, text

from bench.common import fresh_database
from chatbatch.store.claims import claim_for_poll, claim_for_submit
from chatbatch.store.db import db_now, make_engine

FILL_SQL = """
INSERT INTO requests (batch_id, line_no, custom_id, model, body, status, due_at, remote_id)
SELECT 'plans', g, 'c' || g, 'gpt-4o-mini', '{}',
       (ARRAY['queued', 'submitted', 'succeeded', 'succeeded'])[1 + g % 4],
       now() + ((g % 1000) - 250) * interval '1 second', 'task-' || g
FROM generate_series(1, :rows) AS g
"""


def claim_plans(rows: int, chunk: int = 64) -> dict[str, list[str]]:
    """EXPLAIN ANALYZE of each claim on ``rows`` requests (rolled back: nothing is claimed)."""
    plans: dict[str, list[str]] = {}
    with fresh_database() as url:
        db = make_engine(url, pool_size=1)
        with db.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO batches (id, name, status, total, created_at) "
                    "VALUES ('plans', 'plans', 'running', :rows, now())"
                ),
                {"rows": rows},
            )
            conn.execute(text(FILL_SQL), {"rows": rows})
        with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE requests")
        with db.connect() as conn:
            claims: dict[str, Callable[..., Any]] = {
                "claim due submissions": claim_for_submit,
                "claim due polls": claim_for_poll,
            }
            for name, claim in claims.items():
                plans[name] = _explained(conn, claim, chunk)
        db.dispose()
    return plans


def _explained(conn: Connection, claim: Callable[..., Any], chunk: int) -> list[str]:
    """Run ``claim`` once to capture its SQL, then EXPLAIN ANALYZE that SQL; both rolled back."""
    captured: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        captured.append((statement, params))

    with conn.begin() as transaction:
        now = db_now(conn)
        event.listen(conn, "before_cursor_execute", grab)
        try:
            claim(conn, now=now, limit=chunk, lease_seconds=60)
        finally:
            event.remove(conn, "before_cursor_execute", grab)
        statement, params = captured[-1]
        plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, COSTS OFF) " + statement, params)
        lines = [str(line) for line in plan.scalars()]
        transaction.rollback()
    return lines


def print_claim_plans(rows: int) -> None:
    for name, lines in claim_plans(rows).items():
        print(f"  {name} on {rows:,} requests:")
        for line in lines:
            print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    print_claim_plans(parser.parse_args().rows)


if __name__ == "__main__":
    main()
