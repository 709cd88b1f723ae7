"""Alembic environment, configured in code so ``chatbatch db upgrade`` works from any directory."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from chatbatch.store.db import make_engine, normalise_url
from chatbatch.store.models import Base

MIGRATION_LOCK_KEY = 7_243_019_551  # arbitrary constant: serialises concurrent upgrades

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return normalise_url(url)
    from chatbatch.settings import get_settings

    return normalise_url(get_settings().database_url)


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = make_engine(_url(), pool_size=1)
    try:
        with engine.connect() as conn:
            _migrate(conn)
    finally:
        engine.dispose()


def _migrate(conn: object) -> None:
    is_postgres = conn.dialect.name == "postgresql"  # type: ignore[attr-defined]
    context.configure(
        connection=conn,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=not is_postgres,
    )
    with context.begin_transaction():
        if is_postgres:
            conn.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"))  # type: ignore[attr-defined]
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
