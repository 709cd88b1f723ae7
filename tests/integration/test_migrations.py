"""Migrations: upgrade to head on an empty database, and no drift from the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from chatbatch.store.db import make_engine
from chatbatch.store.migrate import check_current, upgrade
from chatbatch.store.models import Base


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


def migrate(engine, revision: str, *, down: bool = False) -> None:
    from alembic import command

    from chatbatch.store.migrate import alembic_config

    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_a_database_with_batches_upgrades_from_0001_and_back(pg_url: str, admin_url: str) -> None:
    """A user's existing data survives the upgrade to head (PostgreSQL, a database of its own)."""
    import psycopg
    from sqlalchemy import text

    name = pg_url.rsplit("/", 1)[1] + "_upgrade"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(pg_url.rsplit("/", 1)[0] + "/" + name, pool_size=1)
    try:
        migrate(engine, "0001")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO batches (id, name, status, total, created_at) "
                    "VALUES ('b1', 'old', 'completed', 1, now())"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO requests (batch_id, line_no, custom_id, model, body, status, "
                    "due_at) VALUES ('b1', 1, 'c1', 'm', '{}', 'failed', now())"
                )
            )
        upgrade(engine)
        check_current(engine)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT custom_id, retries FROM requests")).one() == ("c1", 0)
            conn.execute(text("INSERT INTO archived_requests SELECT * FROM requests"))
            conn.execute(text("DELETE FROM requests"))
        migrate(engine, "0001", down=True)
        with engine.connect() as conn:
            assert "past_results" not in inspect(conn).get_table_names()
            # going below 0010 brings archived requests back rather than dropping them
            assert conn.execute(text("SELECT custom_id FROM requests")).scalar_one() == "c1"
    finally:
        engine.dispose()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def column_names(engine, table: str) -> list[str]:
    return [column["name"] for column in inspect(engine).get_columns(table)]


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_the_archive_and_its_view_have_the_columns_of_requests(
    backend: str, pg_url: str, tmp_path
) -> None:
    """A migration adding a column to requests must add it to the archive and the view too:
    archiving copies rows column by column, and exports read the view."""
    url = pg_url if backend == "postgresql" else f"sqlite:///{tmp_path / 'x.db'}"
    engine = make_engine(url, pool_size=1)
    try:
        upgrade(engine)
        requests = column_names(engine, "requests")
        assert column_names(engine, "archived_requests") == requests
        assert column_names(engine, "all_requests") == requests
    finally:
        engine.dispose()
