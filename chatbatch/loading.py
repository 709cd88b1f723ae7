"""Load a JSONL file into a new batch: validate every line, insert in bulk, all or nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import psycopg
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from chatbatch.db import db_now
from chatbatch.errors import ChatbatchError, InputError
from chatbatch.jsonl_input import LineError, RawRequest, iter_raw_lines, prepare_raw
from chatbatch.models import batches_table, requests_table
from chatbatch.states import BatchStatus, RequestStatus

MAX_PROBLEMS_SHOWN = 50
DUPLICATE_ID_CONSTRAINT = "uq_requests_batch_id_custom_id"
SQLITE_INSERT_CHUNK = 2000
COPY_BUFFER_BYTES = 1 << 20
# The rest (lease_token, attempts, ambiguous_submits, poll_count, retries) take their server
# default of 0.
COPY_COLUMNS = ("batch_id", "line_no", "custom_id", "model", "body", "status", "due_at")


@dataclass(frozen=True)
class LoadedBatch:
    """What ``load`` reports back."""

    id: str
    name: str
    total: int


class _Problems:
    """Collects refused lines; keeps the first few for the message and counts the rest."""

    def __init__(self) -> None:
        self.shown: list[tuple[int | None, str]] = []
        self.count = 0

    def add(self, line_no: int | None, reason: str) -> None:
        self.count += 1
        if len(self.shown) < MAX_PROBLEMS_SHOWN:
            self.shown.append((line_no, reason))


def new_batch_id() -> str:
    """A fresh, unguessable batch id."""
    return "batch_" + uuid.uuid4().hex


def load_jsonl(
    conn: Connection,
    path: Path,
    *,
    name: str | None,
    default_model: str | None,
    max_line_bytes: int,
) -> LoadedBatch:
    """Create a batch from ``path`` inside the caller's transaction; raise InputError on any
    problem so the caller's rollback leaves nothing behind."""
    if not path.is_file():
        raise ChatbatchError(f"{path}: no such file")
    batch_id = new_batch_id()
    name = name or f"{path.stem}-{batch_id[6:14]}"
    _check_name_free(conn, name)
    now = db_now(conn)
    conn.execute(
        insert(batches_table).values(
            id=batch_id,
            name=name,
            status=BatchStatus.RUNNING,
            source=str(path),
            total=0,
            created_at=now,
        )
    )
    problems = _Problems()
    # On PostgreSQL the unique index finds duplicate custom_ids, so a good file of any size
    # loads in constant memory; only a refused file is read again to list every problem.
    postgres = conn.dialect.name == "postgresql"
    prepared = _validated(path, default_model, max_line_bytes, problems, track_ids=not postgres)
    total = 0
    duplicate_found = False
    try:
        total = _insert_requests(conn, batch_id, prepared, now)
    except (IntegrityError, psycopg.errors.UniqueViolation) as exc:
        if not _is_duplicate_id(exc):
            raise
        duplicate_found = True  # the caller's rollback undoes the partial insert
    if duplicate_found or problems.count:
        if postgres:
            problems = _Problems()
            for _ in _validated(path, default_model, max_line_bytes, problems, track_ids=True):
                pass
        raise InputError(str(path), problems.shown, problems.count)
    if total == 0:
        raise InputError(str(path), [(None, "the file has no requests")], 1)
    conn.execute(update(batches_table).where(batches_table.c.id == batch_id).values(total=total))
    return LoadedBatch(batch_id, name, total)


def _check_name_free(conn: Connection, name: str) -> None:
    existing = conn.execute(
        select(batches_table.c.id).where(batches_table.c.name == name)
    ).scalar_one_or_none()
    if existing:
        raise ChatbatchError(
            f"a batch named {name!r} already exists ({existing}); pick another --name"
        )


def _is_duplicate_id(exc: IntegrityError | psycopg.errors.UniqueViolation) -> bool:
    """The insert hit the (batch, custom_id) unique index (COPY raises psycopg's own error)."""
    return DUPLICATE_ID_CONSTRAINT in str(exc.orig if isinstance(exc, IntegrityError) else exc)


def _validated(
    path: Path,
    default_model: str | None,
    max_line_bytes: int,
    problems: _Problems,
    *,
    track_ids: bool,
) -> Iterator[tuple[int, RawRequest]]:
    """Good lines (line number and request), in order; bad ones go to ``problems`` (loading
    continues to report them all). With ``track_ids`` duplicate custom_ids are found here, at
    the cost of memory per line."""
    seen: dict[str, int] = {}
    for line_no, raw, problem in iter_raw_lines(path, max_line_bytes=max_line_bytes):
        if raw is None:
            problems.add(line_no, problem or "unreadable line")
            continue
        try:
            request = prepare_raw(raw, line_no, default_model=default_model)
        except LineError as exc:
            problems.add(line_no, str(exc))
            continue
        if request is None:
            continue
        if track_ids:
            first = seen.setdefault(request[0], line_no)
            if first != line_no:
                problems.add(line_no, f"duplicate custom_id {request[0]!r} (first on line {first})")
                continue
        if not problems.count:
            yield line_no, request


def _insert_requests(
    conn: Connection,
    batch_id: str,
    prepared: Iterable[tuple[int, RawRequest]],
    now: datetime,
) -> int:
    if conn.dialect.name == "postgresql":
        return _copy_requests(conn, batch_id, prepared, now)
    return _insert_requests_in_chunks(conn, batch_id, prepared, now)


def _copy_requests(
    conn: Connection,
    batch_id: str,
    prepared: Iterable[tuple[int, RawRequest]],
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
    prepared: Iterable[tuple[int, RawRequest]],
    now: datetime,
) -> Iterator[tuple[bytes, int]]:
    """COPY text-format rows (``COPY_COLUMNS``) joined into buffers of about
    ``COPY_BUFFER_BYTES``; each with its row count."""
    head = _copy_text(batch_id).encode() + b"\t"
    tail = f"\t{RequestStatus.QUEUED.value}\t{now.isoformat()}\n".encode()
    parts: list[bytes] = []
    size = 0
    for line_no, (custom_id, model, body) in prepared:
        row = b"%b%d\t%b\t%b\t%b%b" % (
            head,
            line_no,
            _copy_text(custom_id).encode(),
            _copy_text(model).encode(),
            body.replace(b"\\", b"\\\\"),  # compact JSON: no raw tab, CR or LF inside
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
    prepared: Iterable[tuple[int, RawRequest]],
    now: datetime,
) -> int:
    total = 0
    chunk: list[dict[str, object]] = []
    for line_no, (custom_id, model, body) in prepared:
        chunk.append(
            {
                "batch_id": batch_id,
                "line_no": line_no,
                "custom_id": custom_id,
                "model": model,
                "body": body.decode(),
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
