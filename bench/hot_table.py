"""Hot table: do claims and ticks slow down as finished rows pile up? Measure first.

Finished batches are loaded in rounds, each row written as a run writes it: inserted queued,
updated in bulk to submitting, submitted and succeeded (each update leaves a dead version),
its batch completed; autovacuum is the server's. Beside them runs one batch of 10,000 rows
(8,000 queued, 2,000 submitted, all due). At each size (finished rows) the claims, reads and
sweeps of a chunk and a tick are timed (medians, each run rolled back) and the sizes, live and
dead tuples of ``requests`` read; times come with their ratio to the first size's, from the
same run. At the largest size, again after ANALYZE, then after VACUUM: stale statistics, dead
tuples and sheer size told apart; last, after ``chatbatch archive`` has moved every finished
batch out (its rate printed) and VACUUM has run, as a fleet that archives nightly would be.

    python -m bench.hot_table                     # 0, 1M, 2M, 4M finished rows
    python -m bench.hot_table --sizes 0,500000
    python -m bench.hot_table --quick             # 0, 50k, 100k
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from bench.claim_plans import captured, explained
from bench.common import fresh_database
from chatbatch.operations import archive
from chatbatch.rules.states import Policy
from chatbatch.store import claims, liveness, sweeps
from chatbatch.store.db import db_now, make_engine

LIVE_ROWS = 10_000
ROUND_BATCHES = 25  # finished batches loaded per round
BODY = (
    """'{"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Label the """
    """sentiment."}, {"role": "user", "content": "review ' || g || ': the product was fine"}]}'"""
)
LIVE_SQL = (
    "INSERT INTO batches (id, name, status, total, created_at) "
    "VALUES ('live', 'live', 'running', :rows, now())",
    f"""INSERT INTO requests (batch_id, line_no, custom_id, model, body, fingerprint, status,
        due_at)
    SELECT 'live', g, 'c' || g, 'gpt-4o-mini', {BODY}, md5('live' || g), 'queued',
           now() - interval '1 minute'
    FROM generate_series(1, :rows) AS g""",
    """UPDATE requests SET status = 'submitted', attempts = 1, provider = 'default',
        remote_id = 'task-' || id, submitted_at = due_at, expires_at = now() + interval '1 day'
    WHERE line_no % 5 = 0""",
)
ROUND_SQL = (
    """INSERT INTO batches (id, name, status, total, created_at)
    SELECT :round || '-' || k, :round || '-' || k, 'running', :rows / :batches, now()
    FROM generate_series(0, :batches - 1) AS k""",
    f"""INSERT INTO requests (batch_id, line_no, custom_id, model, body, fingerprint, status,
        due_at)
    SELECT :round || '-' || g % :batches, g / :batches, 'c' || g, 'gpt-4o-mini', {BODY},
           md5(:round || g), 'queued', now()
    FROM generate_series(0, :rows - 1) AS g""",
    """UPDATE requests SET status = 'submitting', attempts = attempts + 1, worker_id = 'hot',
        lease_token = lease_token + 1, due_at = now() + interval '1 minute'
    WHERE batch_id = ANY(:ids) AND status = 'queued'""",
    """UPDATE requests SET status = 'submitted', worker_id = NULL, lease_token = lease_token + 1,
        provider = 'default', remote_id = 'task-' || id, submitted_at = now(),
        expires_at = now() + interval '1 day', due_at = now() + interval '1 second'
    WHERE batch_id = ANY(:ids) AND status = 'submitting'""",
    """UPDATE requests SET status = 'succeeded', lease_token = lease_token + 1, poll_count = 1,
        polled_at = now(), completed_at = now(), remote_status = 'succeed', http_status = 200,
        response = '{"id": "' || remote_id || '", "status": "succeed", "choices": [{"message": '
            || '{"role": "assistant", "content": "positive"}, "finish_reason": "stop"}]}',
        content = 'positive', finish_reason = 'stop', response_model = 'gpt-4o-mini',
        prompt_tokens = 31, completion_tokens = 1, total_tokens = 32
    WHERE batch_id = ANY(:ids) AND status = 'submitted'""",
    "UPDATE batches SET status = 'completed', finished_at = now() WHERE id = ANY(:ids)",
)
SIZES_SQL = """
SELECT 'requests, total', pg_total_relation_size('requests')
UNION ALL SELECT '  heap', pg_relation_size('requests')
UNION ALL SELECT '  all indexes', pg_indexes_size('requests')
UNION ALL (SELECT '    ' || indexrelid::regclass, pg_relation_size(indexrelid)
           FROM pg_index WHERE indrelid = 'requests'::regclass ORDER BY 1)
"""
TUPLES_SQL = """
SELECT n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count
FROM pg_stat_user_tables WHERE relname = 'requests'
"""
TUPLES = ("live tuples", "dead tuples", "autovacuums", "autoanalyzes")
BEATS = {"heartbeat_seconds": 5.0}
SWEEPS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "recover_expired_leases": (sweeps.recover_expired_leases, {"policy": Policy(), **BEATS}),
    "release_lost_polls": (sweeps.release_lost_polls, BEATS),
    "liveness.prune": (liveness.prune, {}),
    "expire_overdue": (sweeps.expire_overdue, {}),
    "cancel_leftovers": (sweeps.cancel_leftovers, {}),
    "finish_batches": (sweeps.finish_batches, {}),
}


def tick(conn: Connection) -> None:
    """The sweeps of one housekeeping pass, one clock reading, as ``Housekeeping.run`` makes
    them (its notification events left out)."""
    now = db_now(conn)
    for sweep, more in SWEEPS.values():
        sweep(conn, now=now, **more)


def _at_now(call: Callable[..., Any], **more: Any) -> Callable[[Connection], Any]:
    return lambda conn: call(conn, now=db_now(conn), **more)


TIMED: dict[str, Callable[[Connection], Any]] = {
    "claim_for_submit (64, gpt-4o-mini)": _at_now(
        claims.claim_for_submit, limit=64, lease_seconds=60, model="gpt-4o-mini"
    ),
    "claim_for_poll (64)": _at_now(claims.claim_for_poll, limit=64, lease_seconds=60),
    "count_due (cap 2,048)": _at_now(claims.count_due, cap=2048),
    "next_claimable_at": claims.next_claimable_at,
    "tick: the sweeps below, together": tick,
    **{f"  {name}": _at_now(sweep, **more) for name, (sweep, more) in SWEEPS.items()},
}


def load_round(db: Engine, number: int, rows: int, batch_rows: int) -> None:
    """``rows`` more finished rows in new batches, each statement its own transaction."""
    batches = max(1, math.ceil(rows / batch_rows))
    name = f"done{number:04d}"
    params = {"round": name, "rows": rows, "batches": batches}
    params["ids"] = [f"{name}-{k}" for k in range(batches)]
    for sql in ROUND_SQL:
        with db.begin() as conn:
            conn.execute(text(sql), params)


def median_seconds(conn: Connection, work: Callable[[Connection], Any], repeats: int) -> float:
    """Median wall time of ``work`` over ``repeats`` runs, each in a rolled-back transaction."""
    runs = []
    for _ in range(repeats):
        with conn.begin() as transaction:
            started = time.perf_counter()
            work(conn)
            runs.append(time.perf_counter() - started)
            transaction.rollback()
    return statistics.median(runs)


def flush_stats(db: Engine) -> None:
    """Have this session's pending table statistics sent now, not up to a second later."""
    with db.begin() as conn:
        conn.execute(text("SELECT pg_stat_force_next_flush()"))


def figures(db: Engine, repeats: int) -> dict[str, float]:
    """Every timed call's median seconds, then sizes (bytes) and tuple counts of ``requests``."""
    flush_stats(db)
    with db.connect() as conn:
        found = {name: median_seconds(conn, work, repeats) for name, work in TIMED.items()}
        with conn.begin():
            found |= {str(name): size for name, size in conn.execute(text(SIZES_SQL))}
            found |= dict(zip(TUPLES, conn.execute(text(TUPLES_SQL)).one(), strict=True))
    return found


def maintained(db: Engine, command: str) -> None:
    flush_stats(db)
    with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(command)


def archive_finished(db: Engine) -> str:
    """Archive every finished batch as ``chatbatch archive`` does, a transaction each; what it
    moved and how fast."""
    with db.connect() as conn:
        finished = archive.archivable_before(conn, db_now(conn) + timedelta(days=1))
    started, moved = time.perf_counter(), 0
    for batch_id in finished:
        with db.begin() as conn:
            moved += archive.archive(conn, batch_id, now=db_now(conn)).changed
    seconds = time.perf_counter() - started
    return (
        f"  archive: {moved:,} requests of {len(finished)} batches in {seconds:.1f} s "
        f"({moved / max(seconds, 1e-9):,.0f} requests/s)"
    )


def plans(db: Engine, label: str) -> list[str]:
    """Each timed call's statements with the scans of their EXPLAIN (ANALYZE, BUFFERS)."""
    lines = [f"  plans at {label}: scans, rows they return or filter out, buffers in all"]
    with db.connect() as conn:
        for name, work in TIMED.items():
            for sql, params in captured(conn, work) if work is not tick else []:
                if "clock_timestamp()" in sql:
                    continue
                plan = explained(conn, (sql, params), "ANALYZE, BUFFERS, COSTS OFF")
                lines.append(f"    {name.strip()}: {' '.join(sql.split())[:80]}")
                keep = [line for line in plan if " Scan " in line or "Removed" in line]
                total = next((line for line in plan if "Buffers:" in line), "no buffers")
                lines += [f"      {line.strip()}" for line in [*keep, total, plan[-1]]]
    return lines


def hot_table(
    sizes: list[int], batch_rows: int, repeats: int, with_plans: bool = False
) -> tuple[str, dict[str, dict[str, float]], list[str]]:
    """The server's autovacuum setting; the figures at each number of finished rows, then
    after ANALYZE, after VACUUM and after archiving every finished batch; and (``with_plans``)
    the plans at the largest size, as loaded and vacuumed."""
    columns: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    with fresh_database() as url:
        db = make_engine(url, pool_size=1)
        with db.begin() as conn:
            autovacuum = conn.exec_driver_sql("SHOW autovacuum").scalar_one()
            for sql in LIVE_SQL:
                conn.execute(text(sql), {"rows": LIVE_ROWS})
        maintained(db, "VACUUM ANALYZE")  # a clean start
        loaded, rounds = 0, 0
        for size in sorted(sizes):
            while loaded < size:
                rows = min(ROUND_BATCHES * batch_rows, size - loaded)
                load_round(db, rounds, rows, batch_rows)
                loaded, rounds = loaded + rows, rounds + 1
            columns[f"{size:,}"] = figures(db, repeats)
        notes += plans(db, f"{loaded:,} finished rows") if with_plans else []
        for command in ("ANALYZE requests", "VACUUM requests"):
            maintained(db, command)
            columns[f"+{command.split()[0]}"] = figures(db, repeats)
        notes += plans(db, "+VACUUM") if with_plans else []
        notes.append(archive_finished(db))
        maintained(db, "VACUUM ANALYZE requests")
        columns["+archive"] = figures(db, repeats)
        db.dispose()
    return autovacuum, columns, notes


def cell(name: str, value: float, base: float) -> str:
    if name in TIMED:
        return f"{value * 1000:9.2f} ms x{value / base:<5.2f}"
    if name in TUPLES:
        return f"{int(value):>19,}"
    return f"{value / 2**20:16,.1f} MB"


def report(columns: dict[str, dict[str, float]]) -> None:
    base = next(iter(columns.values()))
    print(f"  {'finished rows':36}" + "".join(f"{label:>20}" for label in columns))
    for name in base:
        cells = "".join(
            f" {cell(name, column[name], base[name]):>19}" for column in columns.values()
        )
        print(f"  {name:36}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,1000000,2000000,4000000")
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--plans", action="store_true", help="print plans at the largest size")
    parser.add_argument("--quick", action="store_true", help="sizes 0,50000,100000")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.batch_rows, args.repeats = "0,50000,100000", 1000, 3
    sizes = [int(size) for size in args.sizes.split(",")]
    started = time.monotonic()
    autovacuum, columns, notes = hot_table(sizes, args.batch_rows, args.repeats, args.plans)
    print(
        f"hot table: one running batch of {LIVE_ROWS:,} rows beside finished batches of "
        f"{args.batch_rows:,} loaded {ROUND_BATCHES} a round (insert queued; update to "
        f"submitting, submitted, succeeded); autovacuum = {autovacuum}; medians of "
        f"{args.repeats} runs, each rolled back; x = ratio to the first column; "
        f"{time.monotonic() - started:.0f} s"
    )
    report(columns)
    print("\n".join(notes))


if __name__ == "__main__":
    main()
