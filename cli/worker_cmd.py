"""``chatbatch worker``: a Celery worker that also runs the scheduling duties."""

from __future__ import annotations

import logging
import os
import socket

import click

from chatbatch.errors import ConfigError
from chatbatch.settings import Settings, get_settings
from chatbatch.store.dialect import is_postgresql_url
from cli.context import handles_errors, ready_database, settings, setup_logging
from cli.providers import providers_option


@click.command("worker")
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 1024),
    help="HTTP requests in flight in this worker (default: CHATBATCH_CONCURRENCY, 16).",
)
@click.option("--loglevel", default="INFO", show_default=True, help="Log level.")
@click.option(
    "--allow-sqlite",
    is_flag=True,
    help="Work a SQLite database (one host, a test): by default a worker refuses one, since "
    "workers elsewhere would each work a file of their own from the same queue.",
)
@providers_option
@handles_errors
def worker_command(concurrency: int | None, loglevel: str, allow_sqlite: bool) -> None:
    """Run a worker: any number may run at once, on one machine or many."""
    if concurrency is not None:
        os.environ["CHATBATCH_CONCURRENCY"] = str(concurrency)
        get_settings.cache_clear()
    config = settings()
    if not config.broker_url:
        raise ConfigError(
            "chatbatch worker needs CHATBATCH_BROKER_URL (e.g. redis://127.0.0.1:6379/0); "
            "for a one-off local job use `chatbatch run`"
        )
    if not allow_sqlite and not is_postgresql_url(config.database_url):
        raise ConfigError(
            f"chatbatch worker takes work from a shared queue, but its database is SQLite "
            f"({_masked(config.database_url)}): a worker elsewhere would work a file of its own. "
            "Set CHATBATCH_DATABASE_URL to the fleet's PostgreSQL (postgresql+psycopg://…), or "
            "pass --allow-sqlite for a test on this one host"
        )
    setup_logging(getattr(logging, loglevel.upper(), logging.INFO))
    ready_database()
    from worker.celery_app import configure
    from worker.runtime import TASK_THREADS, close_process_engine, process_engine
    from worker.scheduler import Ticker

    process_engine()  # fail now, not in the first task, when the key is missing
    app = configure(config)
    hostname = f"chatbatch-{os.getpid()}@{socket.gethostname()}"
    click.echo(banner(hostname, config), err=True)
    ticker = Ticker(app, config, slots=TASK_THREADS)
    ticker.start()
    try:
        app.worker_main(
            [
                "--quiet",  # Celery's banner shows its own thread count, not ours: ours instead
                "worker",
                "--pool=threads",
                f"--concurrency={TASK_THREADS}",
                "--without-gossip",
                "--without-mingle",
                f"--loglevel={loglevel}",
                "--queues",
                config.queue,
                "--hostname",
                hostname,
            ]
        )
    finally:
        ticker.stop()
        close_process_engine()


def banner(hostname: str, config: Settings) -> str:
    """What the worker says on start: its name, its HTTP concurrency, and where it works
    (passwords masked)."""
    return (
        f"chatbatch worker {hostname}: up to {config.concurrency} HTTP requests in flight, "
        f"queue {config.queue}, broker {_masked(config.broker_url or '')}, "
        f"database {_masked(config.database_url)}, provider {config.api_base}"
    )


def _masked(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unreadable URL)"
