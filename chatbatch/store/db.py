"""The database engine and clock. Whoever opens a transaction (a CLI command, a task) commits
it; query functions take a connection and never commit."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from chatbatch.errors import ConfigError
from chatbatch.settings import default_database_path, get_settings
from chatbatch.store.dialect import is_postgresql

IDLE_IN_TRANSACTION_TIMEOUT = "25P03"  # SQLSTATE: idle_in_transaction_session_timeout
# Short statements only: JIT compiling took 0.4–1 s per claim and ~100 ms per sweep statement
# whenever estimates ran high (stale statistics, many batches), for nothing (bench.hot_table).
NO_JIT = "-c jit=off"
POOL_WAIT_SECONDS = 60  # a thread waits this long for one of the process's connections
# TCP keepalives on every PostgreSQL connection (libpq's settings): a connection to a server
# that vanished, or across a link that was cut, is found dead in about 25 s, not hours.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
HIDDEN = "***"
# user:PASSWORD@ after any scheme (Celery takes lists of URLs joined with ';').
_USERINFO_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/:@;]*:)[^/;]*@", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&][^=&;]*password[^=&;]*=)[^&;]*", re.IGNORECASE)


def normalise_url(url: str) -> str:
    """Accept the URLs people paste (``postgres://``, ``postgresql://``) and use psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(
    url: str,
    *,
    pool_size: int = 8,
    max_overflow: int | None = None,
    idle_in_transaction_seconds: float | None = None,
) -> Engine:
    """An engine tuned for its backend: WAL and a busy timeout on SQLite, pre-ping on PostgreSQL.
    Errors never quote statement parameters: they hold provider answers of any size.

    ``idle_in_transaction_seconds`` makes PostgreSQL end a session that sits in an open
    transaction that long: a frozen process (SIGSTOP, a stalled VM) must not keep row locks that
    other workers need once its leases have run out. ``max_overflow`` (default: as many again
    as ``pool_size``) bounds the connections opened beyond the pool.
    """
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"CHATBATCH_DATABASE_URL is not a database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"timeout": 60, "check_same_thread": False},
            pool_size=pool_size,
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError("CHATBATCH_DATABASE_URL must be a PostgreSQL or SQLite URL")
    connect_args: dict[str, Any] = dict(KEEPALIVES)
    given = parsed.query.get("options", "")  # keep options the URL itself sets
    options = [" ".join(given) if isinstance(given, tuple) else given, NO_JIT]
    if idle_in_transaction_seconds:
        millis = max(1, round(idle_in_transaction_seconds * 1000))
        options.append(f"-c idle_in_transaction_session_timeout={millis}")
    connect_args["options"] = " ".join(option for option in options if option)
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_timeout=POOL_WAIT_SECONDS,
        pool_recycle=1800,
        connect_args=connect_args,
        hide_parameters=True,
    )


def is_transient(exc: DBAPIError) -> bool:
    """True when the database connection was lost (a restart, a network cut, or a session ended
    for idling in a transaction): the transaction did not commit, and running it again is safe."""
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        return True
    return getattr(exc.orig, "sqlstate", None) == IDLE_IN_TRANSACTION_TIMEOUT


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def masked_url(url: str | URL) -> str:
    """``url`` safe to print: the password hidden, in the user part and in the query
    (``?password=``); any URL, a database's or a broker's."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=True)
    text = _USERINFO_PASSWORD.sub(rf"\g<1>{HIDDEN}@", text)
    return _QUERY_PASSWORD.sub(rf"\g<1>{HIDDEN}", text)


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The process-wide engine for the configured database, at most ``db_connections``
    connections; on the default, its directory is created first (only then: a command that
    opens no database leaves no trace)."""
    settings = get_settings()
    if settings.uses_default_database:
        _make_data_dir()
    return make_engine(
        settings.database_url,
        pool_size=settings.db_connections,
        max_overflow=0,  # the connection budget is a bound: README "Running a fleet"
        idle_in_transaction_seconds=settings.lease_seconds,
    )


def _make_data_dir() -> None:
    """Create the default database's directory (private: it holds prompts and answers)."""
    where = default_database_path().parent
    try:
        where.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the data directory {where} ({exc.strerror or exc}): set "
            "CHATBATCH_DATABASE_URL to a database elsewhere"
        ) from None


def db_now(conn: Connection) -> datetime:
    """The database's clock (PostgreSQL), so leases never depend on a worker's clock."""
    if is_postgresql(conn):
        value = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        return value.astimezone(UTC)
    return datetime.now(UTC)
