"""``chatbatch run``: load, process in this process with live progress, export."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
import orjson

from chatbatch.providers import provider_table
from chatbatch.reporting.summary import EXIT_PAUSED, exit_code, valid_shortfall
from chatbatch.rules.states import BatchStatus
from chatbatch.settings import Settings
from chatbatch.store import notifications, reads, sweeps
from chatbatch.untrusted import printable
from cli.context import (
    handles_errors,
    ready_database,
    settings,
    setup_logging,
    stderr_console,
)
from cli.exporting import check_output, export_to, is_stdout, shown_output
from cli.interrupts import CleanStop
from cli.load_cmd import LoadArgs, load_options, perform_load, report_reuse
from cli.notify import validate_url
from cli.prices import priced_summary
from cli.progress import ProgressView, progress_bar
from cli.providers import providers_option
from cli.render import print_summary
from cli.simulated import simulated

if TYPE_CHECKING:
    from worker.engine import Engine

EXIT_INTERRUPTED = 130


@contextlib.contextmanager
def _engine_settings(simulate: bool) -> Iterator[Settings]:
    """The settings to process with; with ``--simulate``, aimed at a simulator in this process."""
    if not simulate:
        yield settings()
        return
    with simulated(settings()) as config:
        yield config


format_option = click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), help="Output format."
)
simulate_option = click.option(
    "--simulate",
    is_flag=True,
    help="Send requests to the built-in GeekAI simulator instead of the provider (no key needed).",
)


notify_option = click.option(
    "--notify",
    metavar="URL",
    callback=validate_url,
    help="POST the batch's events here (finished, paused, results about to expire), for cron "
    "jobs and chat hooks: kept with the batch, so whichever worker sees an event sends it.",
)
min_valid_option = click.option(
    "--min-valid",
    type=click.FloatRange(0, 1),
    metavar="RATE",
    help="Exit 3 when the schema pass rate ends below RATE (0 to 1, e.g. 0.95), so a nightly "
    "job can tell; needs a schema.",
)
json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the final status object as JSON on stdout (instead of the summary).",
)


@dataclass(frozen=True)
class Finish:
    """What to do once the batch has been worked: export, report, notify."""

    output: Path | None
    fmt: str | None
    simulate: bool
    notify: str | None
    as_json: bool
    min_valid: float | None = None  # exit 3 below this schema pass rate


@click.command("run")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@load_options
@format_option
@simulate_option
@min_valid_option
@json_option
@handles_errors
def run_command(
    file: Path,
    output: Path,
    load: LoadArgs,
    fmt: str | None,
    simulate: bool,
    min_valid: float | None,
    as_json: bool,
) -> None:
    """Load FILE, work it in this process (this batch only, not others in the database), show
    progress and export the results. FILE and the load options are as for `chatbatch load` (a
    CSV or record file with --template). Ctrl-C stops cleanly and says how to continue.

    Exit code: 0 all succeeded, 3 some failed or expired (or the schema pass rate ended below
    --min-valid), 4 the batch was paused, 2 bad usage or configuration, 130 interrupted, 1 any
    other error.
    """
    setup_logging()
    if min_valid is not None and load.schema_path is None:
        raise click.UsageError("--min-valid needs --schema: it is the schema pass rate")
    check_output(output)  # before anything is loaded or paid for, not after
    if not simulate and not load.dry_run:
        provider_table(settings()).check_keys()
    batch = perform_load(file, load)
    if batch is None:  # --dry-run: shown, nothing loaded, nothing to process
        return
    click.echo(f"loaded {batch.total} request(s) as {batch.name} ({batch.id})", err=True)
    report_reuse(load, batch)
    finish = Finish(output, fmt, simulate, load.notify, as_json, min_valid)
    _process_and_report(batch.id, batch.name, batch.total, finish)


@click.command("process")
@click.argument("batch")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Export here when done.")
@providers_option
@format_option
@simulate_option
@notify_option
@min_valid_option
@json_option
@handles_errors
def process_command(
    batch: str,
    output: Path | None,
    fmt: str | None,
    simulate: bool,
    notify: str | None,
    min_valid: float | None,
    as_json: bool,
) -> None:
    """Work BATCH (and only it) in this process until it is finished: how the embedded default
    continues after `resume`, `retry` or an interrupted `run`, or an extra hand next to running
    workers. Ctrl-C stops cleanly.

    Exit codes as for `run`.
    """
    setup_logging()
    if output is not None:
        check_output(output)
    if not simulate:
        provider_table(settings()).check_keys()
    with ready_database().begin() as conn:
        row = reads.resolve_batch(conn, batch)
        if min_valid is not None and not row.response_schema:
            raise click.UsageError(f"--min-valid needs a schema; {row.name} was loaded without")
        if notify:
            notifications.set_url(conn, row.id, notify)
        if sweeps.reopen_unfinished(conn, row.id):
            click.echo(f"{row.name} was closed with requests left unfinished: reopened", err=True)
    if row.status == BatchStatus.PAUSED:
        click.echo(
            f"error: {row.name} is paused ({printable(row.pause_reason)}); fix the cause, then "
            f"`chatbatch resume {row.name}`",
            err=True,
        )
        sys.exit(EXIT_PAUSED)
    finish = Finish(output, fmt, simulate, notify, as_json, min_valid)
    _process_and_report(row.id, row.name, row.total, finish)


def _process_and_report(batch_id: str, name: str, total: int, finish: Finish) -> NoReturn:
    """Drive the batch to its end here with a progress bar, export, summarise (with cost when a
    price table is known), notify, and exit with the code that tells cron what happened."""
    from worker.inprocess import STOPPED
    from worker.runtime import build_engine

    with _engine_settings(finish.simulate) as config:
        runner = build_engine(config, batch_id=batch_id, kind="run")
        try:
            with CleanStop(lambda: _stop_cleanly(runner)):
                ended = _run_with_progress(runner, batch_id, total)
        except KeyboardInterrupt:
            ended = STOPPED
        finally:
            runner.close()
    if ended == STOPPED:
        click.echo(continue_hint(name, simulate=finish.simulate), err=True)
        sys.exit(EXIT_INTERRUPTED)
    _report(batch_id, finish)


def _report(batch_id: str, finish: Finish) -> NoReturn:
    """Export, print the summary (or its JSON), notify, and exit with the code that tells cron
    what happened."""
    output = finish.output
    count = export_to(batch_id, output, finish.fmt) if output else None
    with ready_database().connect() as conn:
        row = reads.resolve_batch(conn, batch_id)
        summary = priced_summary(conn, row)
    # With -o - the results own stdout: everything else goes to stderr.
    to_stderr = output is not None and is_stdout(output)
    if finish.as_json:
        click.echo(orjson.dumps(summary), err=to_stderr)
    else:
        with redirect_stdout(sys.stderr) if to_stderr else contextlib.nullcontext():
            print_summary(summary)
    if output:
        shown = shown_output(output)
        click.echo(f"wrote {count} result(s) to {shown}", err=finish.as_json or to_stderr)
    code = exit_code(summary, min_valid=finish.min_valid)
    if shortfall := valid_shortfall(summary, finish.min_valid):
        click.echo(f"warning: {shortfall}", err=True)
    if finish.notify:
        _send_own_events(batch_id, str(output) if output else None)
    sys.exit(code)


def _send_own_events(batch_id: str, output: str | None) -> None:
    """Send the events the batch recorded (it finished, or was paused) to its --notify URL,
    now, with where the results went; a failure is a warning, the exit code stays the batch's
    (and any worker sends the event again later)."""
    from worker.notifier import Notifier

    notifier = Notifier(ready_database(), settings())
    for failure in notifier.deliver(batch_id=batch_id, output=output):
        click.echo(f"warning: {failure}", err=True)


def _stop_cleanly(runner: Engine) -> None:
    """The first Ctrl-C: finish what is in flight, send nothing more (runs in a signal
    handler, so it only asks)."""
    from worker.engine import STOP_GRACE_SECONDS

    click.echo(
        f"\nstopping: letting the requests in flight land (at most {STOP_GRACE_SECONDS:g} s); "
        "Ctrl-C again to quit at once",
        err=True,
    )
    runner.stop()


def continue_hint(name: str, *, simulate: bool) -> str:
    """What an interrupted run prints: the batch is kept, and how to go on with it."""
    simulated = " --simulate" if simulate else ""
    return (
        f"interrupted: batch {name} is kept as it is. Continue it with "
        f"`chatbatch process {name}{simulated}`; `chatbatch status {name}` shows it, "
        f"`chatbatch export {name} -o FILE` writes what finished"
    )


def _run_with_progress(runner: Engine, batch_id: str, total: int) -> str:
    """Work the batch to its end (or pause, or a stop) under a live bar; how it ended."""
    from worker.inprocess import run_batch

    with progress_bar(stderr_console()) as progress:
        view = ProgressView(progress, batch_id, total)
        ended = run_batch(runner, batch_id, on_progress=view)
        view(force=True)
    return ended
