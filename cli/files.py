"""Files the commands write: atomically (a temporary sibling renamed into place), so a reader
never sees half a file, with the permissions the umask gives a new file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` and rename it into place: a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "w") as out:
        out.write(text)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A new file beside ``path`` to write (text mode in UTF-8), renamed onto ``path`` when the
    block ends and removed if it fails, so ``path`` is either the old file or the whole new one."""
    fd, tmp = temporary_sibling(path)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as out:
            yield out
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; files are for sharing
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def temporary_sibling(path: Path) -> tuple[int, str]:
    """A new private file beside ``path`` (its descriptor and name), on the same file system
    so that renaming it onto ``path`` is atomic."""
    return tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)


def current_umask() -> int:
    """The process's umask (reading it means setting it: it is put straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
