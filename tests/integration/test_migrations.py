"""Migrations: upgrade to head on an empty database, and no drift from the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from chatbatch.db import make_engine
from chatbatch.migrate import check_current, upgrade
from chatbatch.models import Base


def test_postgres_schema_matches_models(pg_url: str) -> None:
    engine = make_engine(pg_url, pool_size=1)
    try:
        check_current(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        indexes = {ix["name"] for ix in inspect(engine).get_indexes("requests")}
        assert {"ix_requests_status_due_at", "ix_requests_batch_id_status"} <= indexes
    finally:
        engine.dispose()


def test_sqlite_upgrade_from_empty_is_idempotent(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}", pool_size=1)
    upgrade(engine)
    upgrade(engine)
    check_current(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_unmigrated_database_is_refused(tmp_path) -> None:
    import pytest

    from chatbatch.errors import ConfigError

    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ConfigError, match="chatbatch db upgrade"):
        check_current(engine)
    engine.dispose()
