"""What must hold after a batch met a hostile provider: every request finished, the well-behaved
ones billed once with exact usage, and the key nowhere."""

from __future__ import annotations

import io
import re
import subprocess
import urllib.parse
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, select

from chatbatch.reporting.export import export_batch
from chatbatch.rules.states import TERMINAL_STATUSES
from chatbatch.store.models import past_results_table as past
from chatbatch.store.models import requests_table as r
from simulator.answers import expected_usage, request_fingerprint

USAGE_CHECKED = ("prompt_tokens", "completion_tokens", "total_tokens")
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def unspelled(text: str) -> str:
    """``text`` with JSON \\u escapes and %XX escapes undone, so a key echoed in either
    spelling shows as itself."""
    text = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text).replace("\\/", "/")
    return urllib.parse.unquote(text)


def assert_no_key(key: str, text: str, where: str) -> None:
    assert key not in text and key not in unspelled(text), f"the API key leaked into {where}"


def assert_all_finished(db: Engine, batch_id: str) -> list[Any]:
    """Every request of the batch in a terminal state; returns the rows."""
    with db.connect() as conn:
        rows = conn.execute(select(r).where(r.c.batch_id == batch_id)).all()
    stuck = [(row.custom_id, row.status) for row in rows if row.status not in TERMINAL_STATUSES]
    assert not stuck, f"requests left unfinished: {stuck}"
    return rows


def assert_neighbours_billed_once(
    db: Engine, batch_id: str, bodies: dict[str, dict[str, Any]], stats: dict[str, Any]
) -> None:
    """Each well-behaved request (``bodies``: custom_id -> body) succeeded, was accepted by the
    provider exactly once, flagged nothing, and stored exactly the usage it was given."""
    accepted = stats["accepted_by_fingerprint"]
    with db.connect() as conn:
        rows = {
            row.custom_id: row
            for row in conn.execute(select(r).where(r.c.batch_id == batch_id)).all()
        }
        archived = conn.execute(select(past.c.request_id).where(past.c.batch_id == batch_id)).all()
    assert not archived
    for custom_id, body in bodies.items():
        row = rows[custom_id]
        assert row.status == "succeeded", (custom_id, row.status, row.error_message)
        assert accepted.get(request_fingerprint(body)) == 1, custom_id
        assert row.ambiguous_submits == 0 and not row.usage_clamped
        usage = expected_usage(body)
        assert [getattr(row, k) for k in USAGE_CHECKED] == [usage[k] for k in USAGE_CHECKED]


def assert_key_nowhere(
    key: str, db: Engine, db_url: str, batch_ids: Iterable[str], logs: str
) -> None:
    """Not in the database (all of it, as pg_dump writes it), the exports or the logs."""
    dump_url = db_url.replace("postgresql+psycopg://", "postgresql://")
    dump = subprocess.run(
        ["pg_dump", "--data-only", dump_url], capture_output=True, text=True, check=True
    ).stdout
    assert_no_key(key, dump, "the database")
    with db.connect() as conn:
        for batch_id in batch_ids:
            for fmt in ("jsonl", "csv"):
                out = io.BytesIO()
                export_batch(conn, batch_id, out, fmt)
                assert_no_key(key, out.getvalue().decode(), f"the {fmt} export")
    assert_no_key(key, logs, "the logs")
