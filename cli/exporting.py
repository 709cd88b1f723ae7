"""Write a batch's export to a file atomically, so a reader never sees half a file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from chatbatch.db import get_engine
from chatbatch.export import export_batch


def export_to(batch_id: str, output: Path, fmt: str | None) -> int:
    """Export atomically: write a temporary file beside ``output``, then rename it into place."""
    fmt = fmt or ("csv" if output.suffix.lower() == ".csv" else "jsonl")
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as out, get_engine().connect() as conn:
            count = export_batch(conn, batch_id, out, fmt)
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; honour the umask
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return count


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
