"""Write a batch's export to a file atomically, so a reader never sees half a file, with a
progress bar on stderr when it is a terminal."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from sqlalchemy import Connection, select

from chatbatch.db import get_engine
from chatbatch.export import export_batch
from chatbatch.models import batches_table


def export_to(
    batch_id: str,
    output: Path,
    fmt: str | None,
    *,
    columns: Sequence[str] | None = None,
    bom: bool = False,
    progress: bool | None = None,
) -> int:
    """Export atomically: write a temporary file beside ``output``, then rename it into place.
    ``columns`` and ``bom`` are for CSV; ``progress`` None shows a bar when stderr is a TTY."""
    fmt = fmt or ("csv" if output.suffix.lower() == ".csv" else "jsonl")
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            get_engine().connect() as conn,
            _progress_bar(conn, batch_id, output, progress) as on_rows,
        ):
            count = export_batch(
                conn, batch_id, out, fmt, columns=columns, bom=bom, on_rows=on_rows
            )
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; honour the umask
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return count


@contextlib.contextmanager
def _progress_bar(
    conn: Connection, batch_id: str, output: Path, show: bool | None
) -> Iterator[Callable[[int], None] | None]:
    """A callback advancing a bar of rows written out of the batch's total (None: no bar)."""
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

    total = conn.execute(
        select(batches_table.c.total).where(batches_table.c.id == batch_id)
    ).scalar_one_or_none()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    bar = Progress(*columns, console=Console(stderr=True), transient=False)
    task = bar.add_task(f"export {output.name}", total=total)

    def advance(rows: int) -> None:
        if not bar.live.is_started:  # shown from the first rows: an export refused shows none
            bar.start()
        bar.advance(task, rows)

    try:
        yield advance
    finally:
        bar.stop()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
