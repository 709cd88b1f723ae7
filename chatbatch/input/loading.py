"""Load a file into a new batch: validate every request, insert in bulk, all or nothing.

Every kind of input file is a ``Source`` (``chatbatch.input.sources``) of (line, request) pairs:
JSONL files of requests (``chatbatch.input.jsonl_input.RequestLines``) and CSV or JSONL files of
records rendered through a template (``chatbatch.input.records.RecordRequests``). They all go
through the same checks here and the same bulk insert (``chatbatch.input.bulk_insert``: COPY on
PostgreSQL, chunked INSERTs on SQLite).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from chatbatch.errors import ArgumentError, InputError
from chatbatch.input.bulk_insert import insert_requests
from chatbatch.input.estimates import OutputTally, estimated_input_cost, estimated_prompt_tokens
from chatbatch.input.jsonl_input import RequestLines
from chatbatch.input.reuse import reuse_answers
from chatbatch.input.sources import ByteProgress, Prepared, Source
from chatbatch.providers import ProviderTable
from chatbatch.rules import structured
from chatbatch.rules.pricing import Cost, PriceTable
from chatbatch.rules.states import BatchStatus
from chatbatch.store.db import db_now
from chatbatch.store.dialect import is_postgresql
from chatbatch.store.models import batches_table

MAX_PROBLEMS_SHOWN = 50
DUPLICATE_ID_CONSTRAINT = "uq_requests_batch_id_custom_id"
PREVIEW_REQUESTS = 3
BATCH_ID_FORM = re.compile(r"batch_[0-9a-f]{32}", re.IGNORECASE)  # what new_batch_id makes


@dataclass(frozen=True)
class BatchOptions:
    """What a load sets up besides the requests: structured answers, cost control, reuse."""

    schema: dict[str, Any] | None = None
    schema_mode: str = "json_schema"
    schema_name: str = "answer"
    retry_invalid: int = 0
    prices: PriceTable | None = None
    max_cost: Decimal | None = None
    reuse: bool = False
    providers: ProviderTable | None = None  # a providers file: each model must be served
    priority: int = 0  # its share while other batches run: 1 + priority (rules.fair_share)
    notify_url: str | None = None  # where its events are POSTed (store.notifications)
    # Gold labels: the source column of each row's trusted label, the answer field compared
    # with it (None: the whole answer), whether case counts (rules.quality).
    gold_column: str | None = None
    gold_field: str | None = None
    gold_case_sensitive: bool = False


@dataclass(frozen=True)
class LoadedBatch:
    """What ``load`` reports back."""

    id: str
    name: str
    total: int
    reused: int = 0


@dataclass
class Preview:
    """What ``--dry-run`` shows: the first requests as they would be stored, and estimates."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    prompt_tokens: int = 0
    tokens_by_model: dict[str, int] = field(default_factory=dict)
    cost: Cost | None = None
    output_by_model: dict[str, OutputTally] = field(default_factory=dict)  # for output estimates


class _Problems:
    """Collects refused lines; keeps the first few for the message and counts the rest."""

    def __init__(self) -> None:
        self.shown: list[tuple[int | None, str]] = []
        self.count = 0

    def add(self, line_no: int | None, reason: str) -> None:
        """Count one refused line; keep it for the message while there are few."""
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
    options: BatchOptions | None = None,
    on_bytes: ByteProgress | None = None,
) -> LoadedBatch:
    """Create a batch from a JSONL file of requests inside the caller's transaction."""
    source = RequestLines(path, default_model=default_model, max_line_bytes=max_line_bytes)
    return load_source(conn, source, name=name, options=options, on_bytes=on_bytes)


def load_source(
    conn: Connection,
    source: Source,
    *,
    name: str | None,
    options: BatchOptions | None = None,
    on_bytes: ByteProgress | None = None,
) -> LoadedBatch:
    """Create a batch from ``source`` inside the caller's transaction; raise InputError on any
    problem so the caller's rollback leaves nothing behind."""
    options = options or BatchOptions()
    path = source.path
    check_input_file(path)
    batch_id = new_batch_id()
    name = name or f"{path.stem}-{batch_id[6:14]}"
    _check_name_free(conn, name)
    now = db_now(conn)
    conn.execute(insert(batches_table).values(_batch_row(batch_id, name, path, options, now)))
    problems = _Problems()
    # On PostgreSQL the unique index finds duplicate custom_ids, so a good file of any size
    # loads in constant memory; only a refused file is read again to list every problem.
    postgres = is_postgresql(conn)
    prepared = _prepared(source, options, problems, track_ids=not postgres, on_bytes=on_bytes)
    total = 0
    duplicate_found = False
    most = _MostChoices()
    try:
        total = insert_requests(conn, batch_id, most.counted(prepared), now)
    except (IntegrityError, psycopg.errors.UniqueViolation) as exc:
        if not _is_duplicate_id(exc):
            raise
        duplicate_found = True  # the caller's rollback undoes the partial insert
    if duplicate_found or problems.count:
        if postgres:
            problems = _Problems()
            for _ in _prepared(source, options, problems, track_ids=True):
                pass
        raise InputError(str(path), problems.shown, problems.count)
    if total == 0:
        raise InputError(str(path), [(None, "the file has no requests")], 1)
    columns = source.record_columns()
    _check_gold_column(str(path), options.gold_column, columns)
    conn.execute(
        update(batches_table)
        .where(batches_table.c.id == batch_id)
        .values(
            total=total,
            record_columns=None if columns is None else _json_text(columns),
            max_choices=most.choices,
        )
    )
    reused = reuse_answers(conn, batch_id, now=now) if options.reuse else 0
    return LoadedBatch(batch_id, name, total, reused)


def preview_source(
    source: Source,
    *,
    options: BatchOptions | None = None,
    shown: int = PREVIEW_REQUESTS,
    on_bytes: ByteProgress | None = None,
) -> Preview:
    """Check the whole of ``source`` as a load would and estimate its prompt tokens and input
    cost, touching no database; InputError as ``load_source`` would raise it."""
    options = options or BatchOptions()
    check_input_file(source.path)
    problems = _Problems()
    preview = Preview()
    tokens = preview.tokens_by_model
    for line_no, custom_id, model, body, _record in _prepared(
        source, options, problems, track_ids=True, on_bytes=on_bytes
    ):
        preview.total += 1
        tokens[model] = tokens.get(model, 0) + estimated_prompt_tokens(body)
        preview.output_by_model.setdefault(model, OutputTally()).add(body)
        if len(preview.requests) < shown:
            preview.requests.append({"line": line_no, "custom_id": custom_id, "body": body})
    if problems.count:
        raise InputError(str(source.path), problems.shown, problems.count)
    if preview.total == 0:
        raise InputError(str(source.path), [(None, "the file has no requests")], 1)
    preview.prompt_tokens = sum(tokens.values())
    if options.prices is not None:
        preview.cost = estimated_input_cost(tokens, options.prices)
    return preview


def _batch_row(
    batch_id: str, name: str, path: Path, options: BatchOptions, now: datetime
) -> dict[str, Any]:
    """The new batch's row; ``total`` and ``record_columns`` are filled in once all is read."""
    schema = options.schema
    return {
        "id": batch_id,
        "name": name,
        "status": BatchStatus.RUNNING,
        "source": str(path),
        "total": 0,
        "created_at": now,
        "response_schema": None if schema is None else structured.schema_text(schema),
        "retry_invalid": options.retry_invalid,
        "max_cost": None if options.max_cost is None else f"{options.max_cost:f}",
        "prices": None if options.prices is None else options.prices.model_dump_json(),
        "priority": options.priority,
        "notify_url": options.notify_url,
        "gold_column": options.gold_column,
        "gold_field": options.gold_field,
        "gold_case_sensitive": options.gold_case_sensitive,
    }


class _MostChoices:
    """The largest ``n`` (answers per request) among the requests loaded so far."""

    def __init__(self) -> None:
        self.choices = 1

    def counted(self, prepared: Iterator[Prepared]) -> Iterator[Prepared]:
        """``prepared`` as it is, each request's ``n`` noted on the way."""
        for item in prepared:
            n = item[3].get("n")
            if isinstance(n, int) and not isinstance(n, bool) and n > self.choices:
                self.choices = n
            yield item


def _check_gold_column(path: str, gold_column: str | None, columns: list[str] | None) -> None:
    """InputError naming the file when ``--gold-column`` is none of its columns."""
    if gold_column is None or columns is None or gold_column in columns:
        return
    shown = ", ".join(repr(name) for name in columns[:20])
    problem = f"--gold-column {gold_column!r} is not a column of the file (columns: {shown})"
    raise InputError(path, [(1, problem)], 1)


def _json_text(value: Any) -> str:
    """``value`` as compact JSON text, for a text column."""
    return orjson.dumps(value).decode()


def check_input_file(path: Path) -> None:
    """ArgumentError naming ``path`` unless it is a file: checked before anything else, so a
    mistyped name is reported as such (exit 2) and touches no database."""
    if not path.exists():
        raise ArgumentError(f"{path}: no such file")
    if not path.is_file():
        raise ArgumentError(f"{path}: not a file")


def _check_name_free(conn: Connection, name: str) -> None:
    """ArgumentError when ``name`` is taken or would shadow a batch id: commands take a batch
    by id or name, so a name equal to an id (any id to come, ids being random) is refused."""
    if BATCH_ID_FORM.fullmatch(name):
        raise ArgumentError(
            f"{name!r} looks like a batch id (batch_ and 32 hex digits); pick another --name"
        )
    existing = conn.execute(
        select(batches_table.c.id, batches_table.c.name).where(
            (batches_table.c.name == name) | (batches_table.c.id == name)
        )
    ).first()
    if existing is None:
        return
    if existing.name == name:
        raise ArgumentError(
            f"a batch named {name!r} already exists ({existing.id}); pick another --name"
        )
    raise ArgumentError(f"{name!r} is the id of batch {existing.name!r}; pick another --name")


def _is_duplicate_id(exc: IntegrityError | psycopg.errors.UniqueViolation) -> bool:
    """The insert hit the (batch, custom_id) unique index (COPY raises psycopg's own error)."""
    return DUPLICATE_ID_CONSTRAINT in str(exc.orig if isinstance(exc, IntegrityError) else exc)


def _unserved(model: str, providers: ProviderTable | None) -> str | None:
    """Why no provider will take ``model`` (None: one serves it, or there is no file)."""
    if providers is None or providers.route(model) is not None:
        return None
    return f"no provider in {providers.source} serves model {model!r}"


def _prepared(
    source: Source,
    options: BatchOptions,
    problems: _Problems,
    *,
    track_ids: bool,
    on_bytes: ByteProgress | None = None,
) -> Iterator[Prepared]:
    """Good requests in order, with the batch's schema applied; bad lines go to ``problems``
    (reading continues to report them all, yielding nothing more). With ``track_ids`` duplicate
    custom_ids are found here, at the cost of memory per line."""
    seen: dict[str, int] = {}
    schema = options.schema
    for line_no, entry, problem in source.entries(on_bytes):
        if entry is None:
            problems.add(line_no, problem or "unreadable line")
            continue
        custom_id, model, body, record = entry
        unserved = _unserved(model, options.providers)
        if unserved:
            problems.add(line_no, unserved)
            continue
        if track_ids:
            first = seen.setdefault(custom_id, line_no)
            if first != line_no:
                problems.add(line_no, source.duplicate(custom_id, first))
                continue
        if problems.count:
            continue
        if schema is not None:
            structured.apply_schema(
                body, schema, mode=options.schema_mode, name=options.schema_name
            )
        yield line_no, custom_id, model, body, record
