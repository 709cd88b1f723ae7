"""What every command needs: settings, a database at the right schema, and error handling."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from chatbatch.errors import ChatbatchError, ConfigError
from chatbatch.logs import configure_logging
from chatbatch.providers import provider_table
from chatbatch.settings import DATABASE_FILE, Settings, default_database_path, get_settings
from chatbatch.store.db import get_engine

if TYPE_CHECKING:
    pass

F = TypeVar("F", bound=Callable[..., Any])


def settings() -> Settings:
    """The settings, with a readable error when the environment holds a bad value."""
    try:
        return get_settings()
    except ValidationError as exc:
        raise ConfigError(bad_configuration(exc)) from None


def bad_configuration(exc: ValidationError) -> str:
    """One readable line per bad setting, without pydantic's links."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        name = f"CHATBATCH_{where.upper()}" if where else "settings"
        problems.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
    return "bad configuration: " + "; ".join(problems)


def ready_database() -> Engine:
    """The engine, migrated automatically on the embedded SQLite default, checked otherwise."""
    from chatbatch.store.migrate import check_current, upgrade

    engine = database_engine()
    if settings().is_embedded:
        upgrade(engine)
    else:
        check_current(engine)
    return engine


def database_engine() -> Engine:
    """The engine as it is (no schema check), after the notice about a stale local database."""
    notice_stale_local_database()
    return get_engine()


@functools.cache
def notice_stale_local_database() -> None:
    """Once per command, on stderr: a ``./chatbatch.db`` here is no longer the default database
    (it was before the default moved to the data directory), and how to keep using it."""
    config = settings()
    local = Path(DATABASE_FILE)
    if not config.uses_default_database or not local.is_file():
        return
    default = default_database_path()
    if local.resolve() == default.resolve():
        return
    click.echo(
        f"note: ./{DATABASE_FILE} is not used any more; the default database is now {default}; "
        f"set CHATBATCH_DATABASE_URL=sqlite:///{DATABASE_FILE} to keep using it",
        err=True,
    )


def handles_errors(fn: F) -> F:
    """Turn our errors into a message on stderr and a non-zero exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ChatbatchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except ValidationError as exc:  # settings read outside settings(), e.g. by get_engine()
            click.echo(f"error: {bad_configuration(exc)}", err=True)
            sys.exit(ConfigError.exit_code)
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            click.echo(f"error: database unavailable: {reason}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def stderr_console() -> Console:
    """The one console on stderr that live views and log lines share, so a log line is
    printed above a live bar instead of through it."""
    return Console(stderr=True)


def _every_key() -> list[str]:
    """The API key, every key a providers file names and the dashboard's token, to keep out
    of the logs."""
    try:
        settings = get_settings()
    except ValueError:
        return []
    token = settings.dashboard_token
    extra = [token.get_secret_value()] if token and token.get_secret_value() else []
    try:
        return provider_table(settings).keys() + extra  # the configured key without a file
    except ChatbatchError:  # a bad providers file is reported where it is used
        return ([key] if (key := settings.api_key_value()) else []) + extra


def setup_logging(level: int = logging.WARNING) -> None:
    """Log to stderr, scrubbing the API key: through rich on a terminal (so the lines never
    break a live bar), plain lines otherwise (files, pipes, workers under a supervisor)."""
    handler = None
    if sys.stderr.isatty():
        handler = RichHandler(console=stderr_console(), show_path=False, markup=False)
    configure_logging(level, secrets=_every_key(), handler=handler)
    logging.getLogger("alembic").setLevel(logging.WARNING)
