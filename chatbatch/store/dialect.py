"""Every difference between PostgreSQL and SQLite that chatbatch's code depends on, decided here.

Callers ask (``is_postgresql``), borrow a behaviour (``read_snapshot``) or build SQL from a
function compiled for each backend (``utc_day``, ``epoch_seconds``, ``seconds_between``,
``floor_div``) instead of testing the dialect's name themselves, so a reader finds what differs
between the two backends in one file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import URL, Connection, Float, Integer, String, Table, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

SORT_MEMORY = "64MB"  # a report sorts every latency: in memory, not on disk


def is_postgresql(conn: Connection) -> bool:
    """Whether ``conn`` is to PostgreSQL (else SQLite, the embedded default)."""
    return conn.dialect.name == "postgresql"


def is_postgresql_url(url: str) -> bool:
    """Whether a database URL names PostgreSQL (with any driver)."""
    return make_url(url).get_backend_name() == "postgresql"


def bounded(conn: Connection, seconds: float) -> Connection:
    """``conn`` with the rest of its transaction's statements cut off after ``seconds`` each
    (PostgreSQL; SQLite has one writer and no such setting): a claim or sweep whose plan went
    wrong fails and is tried again, instead of holding its locks for minutes."""
    if is_postgresql(conn):
        conn.execute(text(f"SET LOCAL statement_timeout = {max(1, round(seconds * 1000))}"))
    return conn


def insert_if_new(
    conn: Connection, table: Table, values: dict[str, Any], unique: list[str]
) -> bool:
    """Insert one row unless a row with the same ``unique`` columns exists (two workers racing
    record it once); True if this call inserted it."""
    dialect_insert = postgresql_insert if is_postgresql(conn) else sqlite_insert
    stmt = dialect_insert(table).values(values).on_conflict_do_nothing(index_elements=unique)
    return conn.execute(stmt).rowcount == 1


def sqlite_file(url: URL) -> str | None:
    """The file a SQLite ``url`` names; None for PostgreSQL and for an in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database


@contextmanager
def read_snapshot(conn: Connection) -> Iterator[Connection]:
    """A read-only transaction in which every query sees the same snapshot (PostgreSQL's
    REPEATABLE READ, with room to sort in memory; SQLite's transactions already are one)."""
    postgresql = is_postgresql(conn)
    if postgresql:
        conn.execution_options(isolation_level="REPEATABLE READ")
    with conn.begin():
        if postgresql:
            conn.execute(text(f"SET LOCAL work_mem = '{SORT_MEMORY}'"))
        yield conn


class utc_day(FunctionElement[str]):
    """The UTC calendar date (``YYYY-MM-DD``) of a timestamp column, on either backend."""

    type = String()
    inherit_cache = True
    name = "utc_day"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = element.clauses
    return f"to_char({compiler.process(column, **kw)} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = element.clauses  # SQLite stores our timestamps as naive UTC text
    return f"strftime('%Y-%m-%d', {compiler.process(column, **kw)})"


class epoch_seconds(FunctionElement[float]):
    """Seconds since 1970 (float) of a UTC timestamp column, on either backend (to the
    millisecond on SQLite)."""

    type = Float()
    inherit_cache = True
    name = "epoch_seconds"


@compiles(epoch_seconds, "postgresql")
def _epoch_postgresql(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = element.clauses
    return f"CAST(EXTRACT(EPOCH FROM {compiler.process(column, **kw)}) AS DOUBLE PRECISION)"


@compiles(epoch_seconds, "sqlite")
def _epoch_sqlite(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = element.clauses  # naive UTC text; julianday counts days (float), so round to ms
    return f"round((julianday({compiler.process(column, **kw)}) - 2440587.5) * 86400.0, 3)"


class seconds_between(FunctionElement[float]):
    """``later - earlier`` in seconds (float, millisecond precision on SQLite)."""

    type = Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(seconds_between, "postgresql")
def _between_postgresql(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    earlier, later = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(EXTRACT(EPOCH FROM ({later} - {earlier})) AS DOUBLE PRECISION)"


@compiles(seconds_between, "sqlite")
def _between_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    earlier, later = (compiler.process(c, **kw) for c in element.clauses)
    return f"round((julianday({later}) - julianday({earlier})) * 86400.0, 3)"


class floor_div(FunctionElement[int]):
    """``floor(a / b)`` as an integer for non-negative ``a`` and positive ``b``."""

    type = Integer()
    inherit_cache = True
    name = "floor_div"


@compiles(floor_div, "postgresql")
def _floor_div_postgresql(element: floor_div, compiler: SQLCompiler, **kw: Any) -> str:
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(floor({a} / {b}) AS BIGINT)"


@compiles(floor_div, "sqlite")
def _floor_div_sqlite(element: floor_div, compiler: SQLCompiler, **kw: Any) -> str:
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(({a}) / ({b}) AS INTEGER)"  # truncation is floor for a >= 0
