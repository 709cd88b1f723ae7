"""Run the shipped Alembic migrations and check a database is at head."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from chatbatch.errors import ConfigError
from chatbatch.store.dialect import is_postgresql, sqlite_file


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the migrations inside the installed package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("migrations")))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


MIGRATION_LOCK = 7_351_027  # the advisory lock PostgreSQL migrations take


def upgrade(engine: Engine) -> None:
    """Upgrade the database behind ``engine`` to the newest revision. Two processes doing it
    at once (two first `run`s on a new machine) take turns: the second finds it done."""
    cfg = alembic_config()
    with _migration_lock(engine), engine.begin() as conn:
        if is_postgresql(conn):
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """For a SQLite file, an exclusive lock on a file beside it while migrating (SQLite's own
    locks do not cover Alembic's schema reads and DDL together); nothing otherwise."""
    database = sqlite_file(engine.url)
    if database is None:
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_current(engine: Engine) -> None:
    """Refuse to work on a database whose schema is not at head."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        raise ConfigError(
            f"the database schema is at {current or 'nothing'}, not {head}: "
            "run `chatbatch db upgrade`"
        )
