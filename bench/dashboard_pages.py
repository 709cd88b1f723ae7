"""Dashboard pages: does a page of a batch's requests cost the same at a million rows?

Two finished batches are written straight into a fresh PostgreSQL database: a baseline of
1,000 requests and a big one of N (default 1,000,000), each 97% succeeded, 2% failed and 1%
expired, then VACUUM ANALYZE. The dashboard is served by uvicorn from this process (``web.
server.serving``) and every URL below is fetched over HTTP, keep-alive, a few warm-ups then
the median of ``--repeats``. Each line prints the baseline's time, the big batch's, their
ratio (target for the requests table: about 1, flat) and whether the big batch's page came
in under 100 ms (the issue's target). The status object and the batch page (the report's
figures over every row) grow with the batch: the fetch that computes them is timed, then the
later ones, which find them kept (``web.cache``; a finished batch's are kept until it changes).

    python -m bench.dashboard_pages                  # N = 1,000,000
    python -m bench.dashboard_pages --quick          # N = 100,000
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import httpx
from sqlalchemy import text

from bench.common import fresh_database
from chatbatch.settings import Settings
from chatbatch.store.db import make_engine
from web.app import Dashboard, create_app
from web.server import serving

BASELINE_ROWS = 1_000
TARGET_MS = 100.0
BATCH_SQL = (
    "INSERT INTO batches (id, name, status, total, created_at, finished_at) "
    "VALUES (:id, :id, 'completed', :rows, now(), now())",
    """INSERT INTO requests (batch_id, line_no, custom_id, model, body, status, due_at, attempts,
        submitted_at, completed_at, content, prompt_tokens, completion_tokens, total_tokens,
        error_code, error_message)
    SELECT :id, g, 'c' || g, 'gpt-4o-mini',
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "review ' || g
            || ': the product was fine"}]}',
        CASE WHEN g % 100 < 2 THEN 'failed' WHEN g % 100 = 2 THEN 'expired'
             ELSE 'succeeded' END,
        now(), 1, now() - interval '1 hour', now() - interval '1 hour' + (g % 97) * interval '1 s',
        CASE WHEN g % 100 > 2 THEN 'positive' END, 31, 1, 32,
        CASE WHEN g % 100 < 2 THEN 'server_error' WHEN g % 100 = 2 THEN 'expired' END,
        CASE WHEN g % 100 < 3 THEN 'the provider gave up' END
    FROM generate_series(1, :rows) AS g""",
)


def cases(rows: int) -> dict[str, str]:
    """Each timed URL's label and path (``{b}``: the batch) for a batch of ``rows``."""
    return {
        "requests: first page": "/api/batches/{b}/requests?limit=50",
        "requests: middle page": f"/api/batches/{{b}}/requests?limit=50&after={rows // 2}",
        "requests: last page": f"/api/batches/{{b}}/requests?limit=50&after={rows - 50}",
        "requests: failed, 90% deep": (
            f"/api/batches/{{b}}/requests?limit=50&status=failed&after={rows * 9 // 10}"
        ),
        "requests: expired, first page": "/api/batches/{b}/requests?limit=50&status=expired",
        "requests: custom_id prefix, one match": f"/api/batches/{{b}}/requests?q=c{rows // 2}",
        "requests: custom_id prefix, none": "/api/batches/{b}/requests?q=zzz",
        "requests: one request in full": "/api/requests/{first}",
        "status object (/api/batches/{id})": "/api/batches/{b}",
        "batch page (the report over every row)": "/batches/{b}",
    }


# Figures the dashboard keeps between polls (``web.cache``): the first fetch computes them.
KEPT = ("status object (/api/batches/{id})", "batch page (the report over every row)")


def median_ms(fetch: Callable[[], httpx.Response], repeats: int, warm_ups: int = 2) -> float:
    """Median milliseconds of ``fetch`` after ``warm_ups``; every answer must be 200."""
    runs = []
    for i in range(repeats + warm_ups):
        started = time.perf_counter()
        response = fetch()
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
        if i >= warm_ups:
            runs.append(elapsed * 1000)
    return statistics.median(runs)


def make_batches(url: str, sizes: dict[str, int]) -> dict[str, int]:
    """Write the batches; each one's first request id."""
    engine = make_engine(url, pool_size=1)
    first = {}
    for batch_id, rows in sizes.items():
        started = time.perf_counter()
        with engine.begin() as conn:
            for sql in BATCH_SQL:
                conn.execute(text(sql), {"id": batch_id, "rows": rows})
            first[batch_id] = conn.execute(
                text("SELECT min(id) FROM requests WHERE batch_id = :id"), {"id": batch_id}
            ).scalar_one()
        print(f"  wrote {rows:>9,} requests of {batch_id} in {time.perf_counter() - started:.1f} s")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE requests"))
    engine.dispose()
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="the big batch's requests")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="100,000 rows")
    args = parser.parse_args()
    rows = 100_000 if args.quick else args.rows
    print(f"dashboard pages: baseline {BASELINE_ROWS:,} requests, big batch {rows:,}; "
          f"median of {args.repeats} over HTTP (keep-alive)")  # fmt: skip
    with fresh_database() as url:
        first = make_batches(url, {"small": BASELINE_ROWS, "big": rows})
        dashboard = Dashboard(make_engine(url, pool_size=4), Settings(database_url=url))
        with serving(create_app(dashboard)) as base, httpx.Client(base_url=base) as client:
            report(client, rows, first, args.repeats)
        dashboard.engine.dispose()


def report(client: httpx.Client, rows: int, first: dict[str, int], repeats: int) -> None:
    """Time every case on both batches and print one line each (two for kept figures: the
    fetch that computed them, then the median of those that found them kept)."""
    print(f"  {'':46} {'1,000':>10} {f'{rows:,}':>11} {'ratio':>7}  under {TARGET_MS:.0f} ms")
    for label, path in cases(rows).items():
        computed, kept = {}, {}
        for batch_id in ("small", "big"):
            fetch = functools.partial(client.get, path.format(b=batch_id, first=first[batch_id]))
            if label in KEPT:
                computed[batch_id] = median_ms(fetch, 1, warm_ups=0)
            kept[batch_id] = median_ms(fetch, repeats)
        if computed:
            line(f"{label}, computed", computed, verdict="")
            line("  then kept between polls", kept, verdict="")
        else:
            line(label, kept, verdict="yes" if kept["big"] < TARGET_MS else "NO")


def line(label: str, times: dict[str, float], *, verdict: str) -> None:
    """One printed figure: both batches' times, their ratio, and the verdict."""
    ratio = times["big"] / times["small"]
    print(f"  {label:46} {times['small']:8.1f} ms {times['big']:8.1f} ms {ratio:6.2f}×  {verdict}")


if __name__ == "__main__":
    main()
