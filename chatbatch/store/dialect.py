"""Every difference between PostgreSQL and SQLite that chatbatch's code depends on, decided here.

Callers ask (``is_postgresql``) or borrow a behaviour (``read_snapshot``) instead of testing the
dialect's name themselves, so a reader finds what differs between the two backends in one file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, text

SORT_MEMORY = "64MB"  # a report sorts every latency: in memory, not on disk


def is_postgresql(conn: Connection) -> bool:
    """Whether ``conn`` is to PostgreSQL (else SQLite, the embedded default)."""
    return conn.dialect.name == "postgresql"


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
