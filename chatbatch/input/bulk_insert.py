"""Write a new batch's checked requests into the requests table in bulk: COPY on PostgreSQL,
chunked INSERTs on SQLite. Rows stream from the loader, so a file of any size loads in constant
memory; each row's fingerprint is taken of the body as stored."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, cast

import orjson
import psycopg
from sqlalchemy import Connection, insert

from chatbatch.input.fingerprints import fingerprint
from chatbatch.input.sources import Prepared
from chatbatch.rules.states import RequestStatus
from chatbatch.store.dialect import is_postgresql
from chatbatch.store.models import requests_table

SQLITE_INSERT_CHUNK = 2000
COPY_BUFFER_BYTES = 1 << 20
# The rest (lease_token, attempts, ambiguous_submits, poll_count, retries, invalid_retries) take
# their server default of 0.
COPY_COLUMNS = (
    "batch_id",
    "line_no",
    "custom_id",
    "model",
    "body",
    "fingerprint",
    "record",
    "status",
    "due_at",
)


def insert_requests(
    conn: Connection,
    batch_id: str,
    prepared: Iterable[Prepared],
    now: datetime,
) -> int:
    """Insert ``prepared`` as queued requests of ``batch_id``; the number of rows inserted."""
    if is_postgresql(conn):
        return _copy_requests(conn, batch_id, prepared, now)
    return _insert_requests_in_chunks(conn, batch_id, prepared, now)


def _copy_requests(
    conn: Connection,
    batch_id: str,
    prepared: Iterable[Prepared],
    now: datetime,
) -> int:
    """COPY into the requests table over the transaction's own connection, in large buffers
    of text-format rows built here (no per-row adaptation by the driver)."""
    dbapi = cast(psycopg.Connection[Any], conn.connection.dbapi_connection)
    total = 0
    statement = f"COPY requests ({', '.join(COPY_COLUMNS)}) FROM STDIN"
    with dbapi.cursor() as cursor, cursor.copy(statement) as copy:
        for buffer, rows in _copy_buffers(batch_id, prepared, now):
            copy.write(buffer)
            total += rows
    return total


def _copy_buffers(
    batch_id: str,
    prepared: Iterable[Prepared],
    now: datetime,
) -> Iterator[tuple[bytes, int]]:
    """COPY text-format rows (``COPY_COLUMNS``) joined into buffers of about
    ``COPY_BUFFER_BYTES``; each with its row count. The fingerprint is taken of the body as
    stored."""
    head = _copy_text(batch_id).encode() + b"\t"
    tail = f"\t{RequestStatus.QUEUED.value}\t{now.isoformat()}\n".encode()
    dumps = orjson.dumps
    parts: list[bytes] = []
    size = 0
    for line_no, custom_id, model, body, record in prepared:
        row = b"%b%d\t%b\t%b\t%b\t%b\t%b%b" % (
            head,
            line_no,
            _copy_text(custom_id).encode(),
            _copy_text(model).encode(),
            dumps(body).replace(b"\\", b"\\\\"),  # compact JSON: no raw tab, CR or LF inside
            fingerprint(body).encode(),
            b"\\N" if record is None else record.replace(b"\\", b"\\\\"),
            tail,
        )
        parts.append(row)
        size += len(row)
        if size >= COPY_BUFFER_BYTES:
            yield b"".join(parts), len(parts)
            parts = []
            size = 0
    if parts:
        yield b"".join(parts), len(parts)


def _copy_text(value: str) -> str:
    """``value`` as a COPY text-format field."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _insert_requests_in_chunks(
    conn: Connection,
    batch_id: str,
    prepared: Iterable[Prepared],
    now: datetime,
) -> int:
    """Plain INSERTs of SQLITE_INSERT_CHUNK rows at a time (SQLite has no COPY)."""
    total = 0
    chunk: list[dict[str, object]] = []
    for line_no, custom_id, model, body, record in prepared:
        chunk.append(
            {
                "batch_id": batch_id,
                "line_no": line_no,
                "custom_id": custom_id,
                "model": model,
                "body": orjson.dumps(body).decode(),
                "fingerprint": fingerprint(body),
                "record": None if record is None else record.decode(),
                "status": RequestStatus.QUEUED.value,
                "due_at": now,
            }
        )
        if len(chunk) >= SQLITE_INSERT_CHUNK:
            conn.execute(insert(requests_table), chunk)
            total += len(chunk)
            chunk = []
    if chunk:
        conn.execute(insert(requests_table), chunk)
        total += len(chunk)
    return total
