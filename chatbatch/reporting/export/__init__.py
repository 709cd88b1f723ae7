"""A batch's results to JSONL (the OpenAI Batch output shape) or CSV, in input order.

``export_batch`` picks the path: on PostgreSQL the database builds each line (``postgres``), on
SQLite Python does (``python``, also the reference the SQL is tested against byte for byte).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Any

from sqlalchemy import Connection

from chatbatch.reporting.export import postgres, python
from chatbatch.reporting.export.layout import UNFINISHED, ExportError, OnRows, parse_statuses
from chatbatch.store.dialect import is_postgresql

__all__ = ["UNFINISHED", "ExportError", "OnRows", "export_batch", "parse_statuses"]


def export_batch(
    conn: Connection,
    batch_id: str,
    out: IO[bytes],
    fmt: str,
    *,
    columns: Sequence[str] | None = None,
    bom: bool = False,
    statuses: Sequence[str] | None = None,
    on_rows: OnRows | None = None,
) -> int:
    """Write every request of the batch (only those in ``statuses`` when given) to ``out`` in
    ``fmt`` (jsonl or csv); returns the count. ``on_rows`` hears how many rows each block
    wrote. On PostgreSQL the lines are built by the database (``postgres``)."""
    options: dict[str, Any] = {"columns": columns, "bom": bom, "statuses": statuses}
    if is_postgresql(conn):
        return postgres.export_postgres(conn, batch_id, out, fmt, **options, on_rows=on_rows)
    return python.export_python(conn, batch_id, out, fmt, **options, on_rows=on_rows)
