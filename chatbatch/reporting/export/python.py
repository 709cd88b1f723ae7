"""Export on SQLite: stream a batch's rows from a server-side cursor and build every JSONL line
and CSV row in Python, in input order. These writers are also the reference the PostgreSQL path
(``postgres``) is tested against, byte for byte.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import IO, Any

from sqlalchemy import Connection, Row, select

from chatbatch.reporting.export.layout import (
    CSV_COLUMNS,
    OUTPUT_COLUMNS,
    PLAIN_LAYOUT,
    UNFINISHED,
    CsvLayout,
    OnRows,
    begin_export,
    csv_writer,
    jsonl_line,
    safe_text,
)
from chatbatch.reporting.export.made import made_cell, made_row
from chatbatch.rules.completions import USAGE_COLUMNS
from chatbatch.store.models import all_requests_table as r
from chatbatch.store.models import batches_table as b

STREAM_ROWS = 2000


def iter_results(
    conn: Connection, batch_id: str, statuses: Sequence[str] | None = None
) -> Iterator[Row[Any]]:
    """Rows in input order (only those in ``statuses`` when given) from a server-side cursor,
    so memory does not grow with the batch. ``reused_from`` is ``<batch name>/<custom_id>`` of
    the request a reused answer came from (None when that request is gone)."""
    source = r.alias("source")
    source_batch = b.alias("source_batch")
    reused_from = (source_batch.c.name + "/" + source.c.custom_id).label("reused_from")
    joined = r.outerjoin(source, source.c.id == r.c.reused_from).outerjoin(
        source_batch, source_batch.c.id == source.c.batch_id
    )
    selected: tuple[Any, ...] = (*_selected(), reused_from)
    stmt = select(*selected).select_from(joined).where(r.c.batch_id == batch_id)
    if statuses is not None:
        stmt = stmt.where(r.c.status.in_(list(statuses)))
    result = conn.execute(stmt.order_by(r.c.line_no).execution_options(yield_per=STREAM_ROWS))
    yield from result


def _selected() -> tuple[Any, ...]:
    """The request columns a JSONL line or CSV row is built from."""
    return (
        r.c.id,
        r.c.custom_id,
        r.c.status,
        r.c.remote_id,  # a reused answer carries its source's task id
        r.c.http_status,
        r.c.response,
        r.c.content,
        r.c.finish_reason,
        r.c.response_model,
        r.c.model,
        *(r.c[name] for name in USAGE_COLUMNS),
        r.c.error_code,
        r.c.error_message,
        r.c.submitted_at,
        r.c.completed_at,
        r.c.attempts,
        r.c.retries,
        r.c.ambiguous_submits,
        r.c.provider,
        r.c.schema_valid,
        r.c.schema_error,
        r.c.record,
        r.c.tool_calls,
        r.c.reasoning_content,
        r.c.citations,
        r.c.other_contents,
    )


def write_jsonl(rows: Iterator[Any], out: IO[bytes], on_rows: OnRows | None = None) -> int:
    """One OpenAI-Batch-shaped output line per request; the provider's body passes through."""
    count = 0
    for row in rows:
        out.write(jsonl_line(row))
        count += 1
        if on_rows and count % STREAM_ROWS == 0:
            on_rows(STREAM_ROWS)
    if on_rows and count % STREAM_ROWS:
        on_rows(count % STREAM_ROWS)
    return count


def write_csv(
    rows: Iterator[Any],
    out: IO[str],
    layout: CsvLayout = PLAIN_LAYOUT,
    on_rows: OnRows | None = None,
) -> int:
    """One row per request in ``layout`` (header excluded, ``begin_export`` writes it); cells a
    spreadsheet would run as formulas are neutralised."""
    writer = csv_writer(out)
    plan = [
        (c.kind, c.key, OUTPUT_COLUMNS.index(c.key) if c.kind == "output" else -1)
        for c in layout.columns
    ]
    count = 0
    for row in rows:
        outputs = output_cells(row)
        made = (
            made_row(
                layout, row.status, row.record, row.content, row.schema_valid, row.other_contents
            )
            if layout.needs_made
            else None
        )
        writer.writerow(
            [
                outputs[index] if made is None or kind == "output" else made_cell(kind, key, made)
                for kind, key, index in plan
            ]
        )
        count += 1
        if on_rows and count % STREAM_ROWS == 0:
            on_rows(STREAM_ROWS)
    if on_rows and count % STREAM_ROWS:
        on_rows(count % STREAM_ROWS)
    return count


def csv_cells(row: Any) -> list[Any]:
    """The CSV cells of one request of a plain batch, in ``CSV_COLUMNS`` order."""
    return output_cells(row)[: len(CSV_COLUMNS)]


def output_cells(row: Any) -> list[Any]:
    """The cells made from the request row alone, in ``OUTPUT_COLUMNS`` order; a request not
    finished yet has empty error cells (a transient error on its way is no outcome)."""
    finished = row.status not in UNFINISHED
    return [
        safe_text(row.custom_id),
        row.status,
        safe_text(row.content),
        safe_text(row.finish_reason),
        safe_text(row.response_model or row.model),
        *(getattr(row, name) for name in USAGE_COLUMNS),
        safe_text(row.error_code) if finished else None,
        safe_text(row.error_message) if finished else None,
        safe_text(row.provider),
        safe_text(row.remote_id),
        _iso(row.submitted_at),
        _iso(row.completed_at),
        row.attempts,
        row.retries,
        row.ambiguous_submits,
        safe_text(row.reused_from),
        safe_text(row.tool_calls),
        safe_text(row.reasoning_content),
        safe_text(row.citations),
        None if row.schema_valid is None else ("true" if row.schema_valid else "false"),
        safe_text(row.schema_error),
    ]


def _iso(value: datetime | None) -> str | None:
    """A timestamp cell: ``datetime.isoformat()``, empty when unknown."""
    return value.isoformat() if value else None


def export_python(
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
    """``export_batch`` with every line built here (SQLite, and the reference for the SQL)."""
    layout = begin_export(conn, batch_id, out, fmt, columns=columns, bom=bom, statuses=statuses)
    rows = iter_results(conn, batch_id, statuses)
    if layout is None:
        return write_jsonl(rows, out, on_rows)
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        return write_csv(rows, text, layout, on_rows)
    finally:
        text.detach()
