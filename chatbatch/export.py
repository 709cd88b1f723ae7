"""Stream a batch's results to JSONL (the OpenAI Batch output shape) or CSV, in input order."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

import orjson
from sqlalchemy import Connection, Row, select

from chatbatch.completions import USAGE_COLUMNS
from chatbatch.models import requests_table as r
from chatbatch.states import RequestStatus

STREAM_ROWS = 2000
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\x00")
CSV_COLUMNS = (
    "custom_id",
    "status",
    "content",
    "finish_reason",
    "model",
    *USAGE_COLUMNS,
    "error_code",
    "error_message",
    "remote_id",
    "submitted_at",
    "completed_at",
    "attempts",
    "retries",
    "possible_duplicates",
)
_SELECTED = (
    r.c.id,
    r.c.custom_id,
    r.c.status,
    r.c.remote_id,
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
)


def iter_results(conn: Connection, batch_id: str) -> Iterator[Row[Any]]:
    """Rows in input order from a server-side cursor, so memory does not grow with the batch."""
    stmt = select(*_SELECTED).where(r.c.batch_id == batch_id).order_by(r.c.line_no)
    result = conn.execution_options(yield_per=STREAM_ROWS).execute(stmt)
    yield from result


def write_jsonl(rows: Iterator[Row[Any]], out: IO[bytes]) -> int:
    """One OpenAI-Batch-shaped output line per request; the provider's body passes through."""
    count = 0
    for row in rows:
        out.write(jsonl_line(row))
        count += 1
    return count


def jsonl_line(row: Row[Any]) -> bytes:
    """``{"id", "custom_id", "response": {...} | null, "error": null | {"code", "message"}}``."""
    head = b'{"id":' + orjson.dumps(f"batch_req_{row.id}") + b',"custom_id":'
    head += orjson.dumps(row.custom_id) + b',"response":'
    succeeded = row.status == RequestStatus.SUCCEEDED
    body = _response_body(row, succeeded)
    if body is None:
        head += b"null"
    else:
        status_code = row.http_status or 200
        head += b'{"status_code":' + str(status_code).encode() + b',"request_id":'
        head += orjson.dumps(row.remote_id) + b',"body":' + body + b"}"
    head += b',"error":'
    if succeeded:
        return head + b"null}\n"
    error = {"code": row.error_code or row.status, "message": _error_message(row)}
    return head + orjson.dumps(error) + b"}\n"


def _response_body(row: Row[Any], succeeded: bool) -> bytes | None:
    """The stored body as JSON bytes: verbatim when we parsed it on arrival, else checked."""
    if row.response is None:
        return None
    if succeeded:
        return _one_line(row.response.encode())
    if not row.http_status or row.http_status < 400:
        return None
    try:
        return orjson.dumps(orjson.loads(row.response))
    except orjson.JSONDecodeError:
        return orjson.dumps(row.response)


def _one_line(body: bytes) -> bytes:
    """The body on one line, otherwise byte for byte. Valid JSON can hold CR or LF only as
    whitespace between tokens (inside strings they must be escaped), so turning them into
    spaces changes no value."""
    if b"\n" in body or b"\r" in body:
        return body.replace(b"\r", b" ").replace(b"\n", b" ").strip()
    return body


def _error_message(row: Row[Any]) -> str:
    if row.error_message:
        return str(row.error_message)
    return f"request is {row.status}"


def write_csv(rows: Iterator[Row[Any]], out: IO[str]) -> int:
    """One flat row per request; cells a spreadsheet would run as formulas are neutralised."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for row in rows:
        writer.writerow(csv_cells(row))
        count += 1
    return count


def csv_cells(row: Row[Any]) -> list[Any]:
    """The CSV cells of one request, in ``CSV_COLUMNS`` order."""
    return [
        _safe(row.custom_id),
        row.status,
        _safe(row.content),
        _safe(row.finish_reason),
        _safe(row.response_model or row.model),
        *(getattr(row, name) for name in USAGE_COLUMNS),
        _safe(row.error_code),
        _safe(row.error_message),
        _safe(row.remote_id),
        _iso(row.submitted_at),
        _iso(row.completed_at),
        row.attempts,
        row.retries,
        row.ambiguous_submits,
    ]


def _safe(value: str | None) -> str | None:
    if value and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def export_batch(conn: Connection, batch_id: str, out: IO[bytes], fmt: str) -> int:
    """Write every request of the batch to ``out`` in ``fmt`` (jsonl or csv); returns the count.
    On PostgreSQL the lines are built by the database (``chatbatch.export_sql``)."""
    if conn.dialect.name == "postgresql":
        from chatbatch.export_sql import export_postgres  # it builds on this module

        return export_postgres(conn, batch_id, out, fmt)
    rows = iter_results(conn, batch_id)
    if fmt == "jsonl":
        return write_jsonl(rows, out)
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        return write_csv(rows, text)
    finally:
        text.detach()
