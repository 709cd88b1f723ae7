"""``chatbatch db``: the database schema commands."""

from __future__ import annotations

import click

from cli.context import database_engine, handles_errors, setup_logging


@click.group("db")
def db_group() -> None:
    """Database schema commands."""


@db_group.command("upgrade")
@handles_errors
def db_upgrade() -> None:
    """Create or upgrade the schema to the newest version (works from any directory)."""
    from chatbatch.store.migrate import upgrade

    setup_logging()
    upgrade(database_engine())
    click.echo("database is up to date")
