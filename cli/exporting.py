"""Write a batch's export to a file atomically, so a reader never sees half a file, or to
standard output (``-o -``), with a progress bar on stderr when it is a terminal. The output path
is checked before any work (``check_output``), so a batch is never worked for a file that
cannot be written."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, func, select

from chatbatch.errors import ChatbatchError
from chatbatch.reporting.export import UNFINISHED, ExportError, export_batch
from chatbatch.rules.states import BatchStatus
from chatbatch.store.db import get_engine
from chatbatch.store.models import all_requests_table as every
from chatbatch.store.models import batches_table
from chatbatch.untrusted import printable
from cli.files import atomic_file, temporary_sibling

STDOUT = "-"  # ``-o -``: standard output


def is_stdout(output: Path) -> bool:
    """Whether ``output`` is ``-``, standard output."""
    return str(output) == STDOUT


def shown_output(output: Path) -> str:
    """``output`` as messages name it."""
    return "standard output" if is_stdout(output) else str(output)


def check_output(output: Path) -> None:
    """Refuse, before any work, an output the export could not write: an existing directory
    or other non-file, a parent that is missing or no directory, a directory we may not write
    in (a temporary sibling is made and removed, as the atomic write will make one).
    ExportError (exit code 2) naming the path; ``-`` is standard output and always fine."""
    if is_stdout(output):
        return
    try:
        problem = _output_problem(output)
        if problem is None:
            fd, tmp = temporary_sibling(output)
            os.close(fd)
            os.unlink(tmp)
    except OSError as exc:
        problem = exc.strerror or str(exc)
    if problem is not None:
        raise ExportError(f"cannot write {output}: {problem}")


def _output_problem(output: Path) -> str | None:
    """Why ``output`` cannot be a file we write, as far as its path tells; None when it can."""
    if output.is_dir():
        return "it is a directory"
    if output.exists() and not output.is_file():
        return f"it is not a regular file (`-o {STDOUT}` writes to standard output)"
    parent = output.parent
    if not parent.exists():
        return f"directory {parent} does not exist"
    if not parent.is_dir():
        return f"{parent} is not a directory"
    return None


def output_format(output: Path, fmt: str | None) -> str:
    """``fmt``, else ``csv`` for a ``.csv`` file and ``jsonl`` for anything else (stdout too)."""
    return fmt or ("csv" if output.suffix.lower() == ".csv" else "jsonl")


def export_to(
    batch_id: str,
    output: Path,
    fmt: str | None,
    *,
    columns: Sequence[str] | None = None,
    bom: bool = False,
    statuses: Sequence[str] | None = None,
    progress: bool | None = None,
) -> int:
    """Export atomically: write a temporary file beside ``output``, then rename it into place;
    ``-`` streams to standard output. ``columns`` and ``bom`` are for CSV, ``statuses`` keeps
    only requests in them; ``progress`` None shows a bar when stderr is a TTY. The path is
    checked again first (``check_output``), so a refusal is a usage error, not a traceback."""
    check_output(output)
    options: dict[str, Any] = {"columns": columns, "bom": bom, "statuses": statuses}
    fmt = output_format(output, fmt)
    if is_stdout(output):
        return _export_to_stdout(batch_id, fmt, options, progress)
    with atomic_file(output) as out:
        return _export(batch_id, out, fmt, options, output, progress)


def _export_to_stdout(
    batch_id: str, fmt: str, options: dict[str, Any], progress: bool | None
) -> int:
    """Stream the export to standard output as bytes; a reader that closes the pipe early (as
    ``head`` does) ends it with an error, not a traceback."""
    sys.stdout.flush()
    out = sys.stdout.buffer
    try:
        count = _export(batch_id, out, fmt, options, Path(STDOUT), progress)
        out.flush()
    except BrokenPipeError:
        # Python would flush stdout again at exit and fail once more: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise ChatbatchError("standard output was closed before the export ended") from None
    return count


def _export(
    batch_id: str,
    out: IO[bytes],
    fmt: str,
    options: dict[str, Any],
    output: Path,
    progress: bool | None,
) -> int:
    """The export into ``out``, with the progress bar; the count."""
    with (
        get_engine().connect() as conn,
        _progress_bar(conn, batch_id, output, progress, options["statuses"]) as on_rows,
    ):
        return export_batch(conn, batch_id, out, fmt, **options, on_rows=on_rows)


def unfinished_note(
    conn: Connection, batch: Any, statuses: Sequence[str] | None = None
) -> str | None:
    """The warning an export of a batch that is not finished prints (None when it is): how
    many requests have no outcome yet and how they are exported."""
    counts: dict[str, int] = dict(
        conn.execute(
            select(every.c.status, func.count())
            .where(every.c.batch_id == batch.id)
            .group_by(every.c.status)
        ).all()
    )
    unfinished = sum(n for status, n in counts.items() if status in UNFINISHED)
    if not unfinished:
        return None
    running = batch.status in (BatchStatus.RUNNING, BatchStatus.CANCELLING)
    state = "is still running" if running else f"is {printable(batch.status)}"
    left_out = statuses is not None and not UNFINISHED.intersection(statuses)
    how = "--status leaves them out" if left_out else "they are exported as unfinished"
    return (
        f"batch {printable(batch.name)} {state}: {unfinished} of {sum(counts.values())} "
        f"requests are not finished; {how}"
    )


@contextlib.contextmanager
def _progress_bar(
    conn: Connection,
    batch_id: str,
    output: Path,
    show: bool | None,
    statuses: Sequence[str] | None = None,
) -> Iterator[Callable[[int], None] | None]:
    """A callback advancing a bar of rows written out of those to export (None: no bar)."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        yield None
        return
    from rich.console import Console  # only when a bar is shown: rich costs start-up time
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    total = _rows_to_export(conn, batch_id, statuses)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    bar = Progress(*columns, console=Console(stderr=True), transient=False)
    label = "stdout" if is_stdout(output) else output.name
    task = bar.add_task(f"export {label}", total=total)

    def advance(rows: int) -> None:
        if not bar.live.is_started:  # shown from the first rows: an export refused shows none
            bar.start()
        bar.advance(task, rows)

    try:
        yield advance
    finally:
        bar.stop()


def _rows_to_export(conn: Connection, batch_id: str, statuses: Sequence[str] | None) -> int | None:
    """How many rows the export writes: the batch's total, or those in ``statuses``."""
    if statuses is None:
        return conn.execute(
            select(batches_table.c.total).where(batches_table.c.id == batch_id)
        ).scalar_one_or_none()
    wanted = every.c.batch_id == batch_id, every.c.status.in_(list(statuses))
    count = select(func.count()).where(*wanted)
    return int(conn.execute(count).scalar_one())
