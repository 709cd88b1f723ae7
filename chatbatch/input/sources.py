"""What the loader reads: every kind of input file is a ``Source`` of (line, request) items.

JSONL files of requests (``chatbatch.input.jsonl_input.RequestLines``) and CSV or JSONL files of
records rendered through a template (``chatbatch.input.records.RecordRequests``) are sources;
the loader (``chatbatch.input.loading``) checks their items and stores them. The readers and
the loader both import these types from here, so the imports run one way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

# Told the number of bytes of the file read so far (a progress bar's position).
ByteProgress = Callable[[int], None]
# One request as a source gives it: custom_id, model, body (a dict the loader may still change:
# the schema is applied to it) and the source record as compact JSON (record files only).
Entry = tuple[str, str, dict[str, Any], bytes | None]
# (line number, the request, None) or (line number, None, why the line is refused).
SourceItem = tuple[int, Entry | None, str | None]
# (line number, custom_id, model, body, record): a checked request with the batch options applied.
Prepared = tuple[int, str, str, dict[str, Any], bytes | None]


class Source(Protocol):
    """An input file as a stream of requests; it can be read more than once."""

    path: Path

    def entries(self, on_bytes: ByteProgress | None = None) -> Iterator[SourceItem]:
        """Each line's request or the reason it is refused, in file order."""
        ...

    def duplicate(self, custom_id: str, first_line: int) -> str:
        """The problem to report for a custom_id seen before on ``first_line``."""
        ...

    def record_columns(self) -> list[str] | None:
        """The record files' column names (complete after a full read); None for requests."""
        ...
