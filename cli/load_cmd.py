"""``chatbatch load``: a JSONL file of requests, or a CSV / JSONL file of records rendered through
a prompt template, into a new batch. ``chatbatch run`` loads with the same options
(``cli.load_options``) through ``perform_load``; ``--dry-run`` prints a preview
(``cli.load_preview``) instead of loading."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from cli.context import database_engine, handles_errors, ready_database, settings, setup_logging
from cli.load_options import LoadArgs, batch_options, build_source, load_options
from cli.load_preview import print_preview

if TYPE_CHECKING:
    from chatbatch.input.loading import LoadedBatch
    from chatbatch.input.sources import ByteProgress

PROGRESS_MIN_BYTES = 1 << 20  # smaller files load before a bar would be worth drawing


def perform_load(file: Path, load: LoadArgs, *, as_json: bool = False) -> LoadedBatch | None:
    """Load ``file`` as the options say and return the batch; with ``--dry-run`` print the
    preview instead and return None (nothing is written anywhere)."""
    from chatbatch.input.loading import check_input_file, load_source, preview_source

    check_input_file(file)  # before the template, the schema or the database is touched
    source = build_source(file, load)
    options = batch_options(load)
    if load.dry_run:
        with byte_progress(file, "checking") as on_bytes:
            preview = preview_source(source, options=options, on_bytes=on_bytes)
        averages = earlier_averages(list(preview.output_by_model))
        print_preview(file, preview, options, averages, as_json=as_json)
        return None
    engine = ready_database()
    with byte_progress(file, "loading") as on_bytes, engine.begin() as conn:
        return load_source(conn, source, name=load.name, options=options, on_bytes=on_bytes)


def earlier_averages(models: list[str]) -> dict[str, tuple[float, int]]:
    """The models' average completion tokens in earlier batches, from the configured database
    when it exists and is current; nothing otherwise (a dry run creates and changes nothing)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from chatbatch.errors import ChatbatchError
    from chatbatch.store import reads
    from chatbatch.store.db import normalise_url
    from chatbatch.store.dialect import sqlite_file
    from chatbatch.store.migrate import check_current

    database = sqlite_file(make_url(normalise_url(settings().database_url)))
    if database is not None and not Path(database).is_file():
        return {}  # no earlier batches, and opening the file would create it
    try:
        engine = database_engine()
        check_current(engine)
        with engine.connect() as conn:
            return reads.average_completion_tokens(conn, models)
    except (ChatbatchError, SQLAlchemyError):
        return {}


def report_reuse(load: LoadArgs, batch: LoadedBatch) -> None:
    """With ``--reuse``, say on stderr how many requests were answered from earlier batches."""
    if load.reuse:
        click.echo(f"reused {batch.reused} answer(s) from earlier batches", err=True)


@contextlib.contextmanager
def byte_progress(path: Path, description: str) -> Iterator[ByteProgress | None]:
    """A bar of the bytes of ``path`` read so far, on stderr when it is a terminal and the file
    is large enough to wait for; None (no bar) otherwise, e.g. under cron or in tests."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if size < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(description, total=size)
        yield lambda done: progress.update(task, completed=done)


@click.command("load")
@click.argument("file", type=click.Path(path_type=Path))
@load_options
@click.option("--json", "as_json", is_flag=True, help="Print {id, name, total} as JSON.")
@handles_errors
def load_command(file: Path, load: LoadArgs, as_json: bool) -> None:
    """Load FILE as a new batch, all requests or none.

    FILE is a JSONL file of chat requests; with --template, a CSV file (header row required) or
    a JSONL file of records, each row rendered into one request.
    """
    setup_logging()
    batch = perform_load(file, load, as_json=as_json)
    if batch is None:
        return
    report_reuse(load, batch)
    if as_json:
        result: dict[str, Any] = {"id": batch.id, "name": batch.name, "total": batch.total}
        if load.reuse:
            result["reused"] = batch.reused
        click.echo(orjson.dumps(result))
    else:
        click.echo(batch.id)
    report_who_works(batch)


def report_who_works(batch: LoadedBatch) -> None:
    """On the embedded default, say on stderr that nothing works the batch until a ``process``
    does: no worker takes it, and a user coming from queues would wait for one. With a broker,
    workers take it; stdout stays the id or pure JSON either way."""
    from chatbatch.untrusted import printable

    config = settings()
    if not config.is_embedded or config.broker_url:
        return
    name = printable(batch.name)
    click.echo(
        f"nothing works this batch until you run `chatbatch process {name}` (or `chatbatch run` "
        "next time, which loads and works in one go)",
        err=True,
    )
