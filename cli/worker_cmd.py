"""``chatbatch worker``: a Celery worker that also runs the scheduling duties."""

from __future__ import annotations

import logging
import os
import socket

import click

from chatbatch.errors import ConfigError
from chatbatch.settings import get_settings
from cli.context import handles_errors, ready_database, settings, setup_logging


@click.command("worker")
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 1024),
    help="HTTP requests in flight in this worker (default: CHATBATCH_CONCURRENCY, 16).",
)
@click.option("--loglevel", default="INFO", show_default=True, help="Log level.")
@handles_errors
def worker_command(concurrency: int | None, loglevel: str) -> None:
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
    setup_logging(getattr(logging, loglevel.upper(), logging.INFO))
    ready_database()
    from worker.celery_app import configure
    from worker.runtime import TASK_THREADS, process_engine
    from worker.scheduler import Ticker

    process_engine()  # fail now, not in the first task, when the key is missing
    app = configure(config)
    ticker = Ticker(app, config, slots=TASK_THREADS)
    ticker.start()
    try:
        app.worker_main(
            [
                "worker",
                "--pool=threads",
                f"--concurrency={TASK_THREADS}",
                "--without-gossip",
                "--without-mingle",
                f"--loglevel={loglevel}",
                "--queues",
                config.queue,
                "--hostname",
                f"chatbatch-{os.getpid()}@{socket.gethostname()}",
            ]
        )
    finally:
        ticker.stop()
