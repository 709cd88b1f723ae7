"""``chatbatch run``: load, process in this process with live progress, export."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from chatbatch import queries
from chatbatch.db import get_engine
from chatbatch.settings import Settings
from chatbatch.states import TERMINAL_STATUSES, BatchStatus
from cli.context import handles_errors, ready_database, settings, setup_logging, summarise
from cli.exporting import export_to
from cli.render import print_summary

if TYPE_CHECKING:
    from worker.engine import Engine

EXIT_ALL_SUCCEEDED = 0
EXIT_SOME_FAILED = 3
EXIT_PAUSED = 4
EXIT_INTERRUPTED = 130
PROGRESS_EVERY_SECONDS = 0.3
SIMULATOR_KEY = "sk-sim"  # the simulator's default key; not a secret


@contextlib.contextmanager
def _engine_settings(simulate: bool) -> Iterator[Settings]:
    """The settings to process with; with ``--simulate``, aimed at a simulator in this process."""
    config = settings()
    if not simulate:
        yield config
        return
    from simulator.testing import running_simulator

    with running_simulator() as sim:
        yield config.model_copy(
            update={"api_base": sim.base_url, "api_key": SecretStr(SIMULATOR_KEY)}
        )


class _ProgressView:
    """A live bar of finished requests with counts by state, refreshed a few times a second."""

    def __init__(self, progress: Progress, batch_id: str, total: int) -> None:
        self._progress = progress
        self._batch_id = batch_id
        self._task = progress.add_task("requests", total=total, counts="")
        self._last = 0.0

    def __call__(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last < PROGRESS_EVERY_SECONDS:
            return
        self._last = time.monotonic()
        with get_engine().connect() as conn:
            counts = queries.status_counts(conn, self._batch_id)
        done = sum(counts[s] for s in TERMINAL_STATUSES)
        text = " ".join(f"{k}={v}" for k, v in counts.items() if v)
        self._progress.update(self._task, completed=done, counts=text)


format_option = click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), help="Output format."
)
simulate_option = click.option(
    "--simulate",
    is_flag=True,
    help="Send requests to the built-in GeekAI simulator instead of the provider (no key needed).",
)


@click.command("run")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--name", help="A unique name for the batch.")
@click.option("--model", help="Model for lines that do not name one.")
@format_option
@simulate_option
@handles_errors
def run_command(
    file: Path, output: Path, name: str | None, model: str | None, fmt: str | None, simulate: bool
) -> None:
    """Load FILE, process it in this process, show progress and export the results.

    Exit code: 0 all succeeded, 3 some failed or expired, 4 the batch was paused, 2 bad usage or
    configuration, 1 any other error.
    """
    from chatbatch.loading import load_jsonl

    setup_logging()
    engine = ready_database()
    with engine.begin() as conn:
        batch = load_jsonl(
            conn, file, name=name, default_model=model, max_line_bytes=settings().max_line_bytes
        )
    click.echo(f"loaded {batch.total} request(s) as {batch.name} ({batch.id})", err=True)
    _process_and_report(batch.id, batch.name, batch.total, output, fmt, simulate)


@click.command("process")
@click.argument("batch")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Export here when done.")
@format_option
@simulate_option
@handles_errors
def process_command(batch: str, output: Path | None, fmt: str | None, simulate: bool) -> None:
    """Work an existing batch in this process until it is finished: how the embedded default
    continues after `resume` or `retry`, or an extra hand next to running workers.

    Exit codes as for `run`.
    """
    setup_logging()
    with ready_database().connect() as conn:
        row = queries.resolve_batch(conn, batch)
    if row.status == BatchStatus.PAUSED:
        click.echo(
            f"error: {row.name} is paused ({row.pause_reason}); fix the cause, then "
            f"`chatbatch resume {row.name}`",
            err=True,
        )
        sys.exit(EXIT_PAUSED)
    _process_and_report(row.id, row.name, row.total, output, fmt, simulate)


def _process_and_report(
    batch_id: str, name: str, total: int, output: Path | None, fmt: str | None, simulate: bool
) -> NoReturn:
    """Drive the batch to its end here with a progress bar, export, summarise, exit with the
    code that tells cron what happened."""
    from worker.runtime import build_engine

    with _engine_settings(simulate) as config:
        runner = build_engine(config)
        try:
            final = _run_with_progress(runner, batch_id, total)
        except KeyboardInterrupt:
            click.echo(
                f"interrupted: batch {name} is kept as it is; `chatbatch status {name}` shows "
                f"it, `chatbatch process {name}` continues it, `chatbatch export` writes what "
                "finished",
                err=True,
            )
            sys.exit(EXIT_INTERRUPTED)
        finally:
            runner.close()
    count = export_to(batch_id, output, fmt) if output else None
    with ready_database().connect() as conn:
        summary = summarise(conn, queries.resolve_batch(conn, batch_id))
    print_summary(summary)
    if output:
        click.echo(f"wrote {count} result(s) to {output}")
    if final == BatchStatus.PAUSED:
        sys.exit(EXIT_PAUSED)
    counts = summary["counts"]
    sys.exit(EXIT_ALL_SUCCEEDED if counts["succeeded"] == total else EXIT_SOME_FAILED)


def _run_with_progress(runner: Engine, batch_id: str, total: int) -> str:
    from worker.inprocess import run_batch

    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[counts]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        view = _ProgressView(progress, batch_id, total)
        final = run_batch(runner, batch_id, on_progress=view)
        view(force=True)
    return final
