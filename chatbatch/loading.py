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
from chatbatch.jsonl_input import LineError, PreparedRequest, iter_lines, prepare_line
from chatbatch.models import batches_table, requests_table
from chatbatch.states import BatchStatus, RequestStatus

MAX_PROBLEMS_SHOWN = 50
DUPLICATE_ID_CONSTRAINT = "uq_requests_batch_id_custom_id"
SQLITE_INSERT_CHUNK = 2000
COPY_COLUMNS = (
    "batch_id",
    "line_no",
    "custom_id",
    "model",
    "body",
    "status",
    "due_at",
    "lease_token",
    "attempts",
    "ambiguous_submits",
    "poll_count",
)


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
) -> Iterator[PreparedRequest]:
    """Good lines, in order; bad ones go to ``problems`` (loading continues to report them all).
    With ``track_ids`` duplicate custom_ids are found here, at the cost of memory per line."""
    seen: dict[str, int] = {}
    for line_no, text, problem in iter_lines(path, max_line_bytes=max_line_bytes):
        if text is None:
            problems.add(line_no, problem or "unreadable line")
            continue
        try:
            request = prepare_line(text, line_no, default_model=default_model)
        except LineError as exc:
            problems.add(line_no, str(exc))
            continue
        first = seen.setdefault(request.custom_id, line_no) if track_ids else line_no
        if first != line_no:
            problems.add(
                line_no, f"duplicate custom_id {request.custom_id!r} (first on line {first})"
            )
            continue
        if not problems.count:
            yield request


def _insert_requests(
    conn: Connection, batch_id: str, prepared: Iterable[PreparedRequest], now: datetime
) -> int:
    if conn.dialect.name == "postgresql":
        return _copy_requests(conn, batch_id, prepared, now)
    return _insert_requests_in_chunks(conn, batch_id, prepared, now)


def _row(batch_id: str, request: PreparedRequest, now: datetime) -> tuple[object, ...]:
    return (
        batch_id,
        request.line_no,
        request.custom_id,
        request.model,
        request.body,
        RequestStatus.QUEUED.value,
        now,
        0,
        0,
        0,
        0,
    )


def _copy_requests(
    conn: Connection, batch_id: str, prepared: Iterable[PreparedRequest], now: datetime
) -> int:
    """COPY into the requests table over the transaction's own connection."""
    dbapi = cast(psycopg.Connection[Any], conn.connection.dbapi_connection)
    total = 0
    statement = f"COPY requests ({', '.join(COPY_COLUMNS)}) FROM STDIN"
    with dbapi.cursor() as cursor, cursor.copy(statement) as copy:
        for request in prepared:
            copy.write_row(_row(batch_id, request, now))
            total += 1
    return total


def _insert_requests_in_chunks(
    conn: Connection, batch_id: str, prepared: Iterable[PreparedRequest], now: datetime
) -> int:
    total = 0
    chunk: list[dict[str, object]] = []
    for request in prepared:
        chunk.append(dict(zip(COPY_COLUMNS, _row(batch_id, request, now), strict=True)))
        if len(chunk) >= SQLITE_INSERT_CHUNK:
            conn.execute(insert(requests_table), chunk)
            total += len(chunk)
            chunk = []
    if chunk:
        conn.execute(insert(requests_table), chunk)
        total += len(chunk)
    return total
