"""CSV files and JSONL files of plain records, read as rows of fields and turned into chat
requests through a prompt template. Streams in constant memory; line numbers are the file's
physical lines, so a user can find every row a message names."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from chatbatch.errors import InputError
from chatbatch.input.jsonl_input import MAX_CUSTOM_ID_CHARS, iter_raw_lines
from chatbatch.input.sources import ByteProgress, SourceItem
from chatbatch.input.templating import PromptTemplate, RenderError, RenderTimeout, names_text

# (line number, row number, record, problem): one row as read; record is None when the row is
# bad, and then problem says why. Row numbers count the data rows (1 for the first), bad ones
# included, blank lines not.
RecordItem = tuple[int, int, dict[str, Any] | None, str | None]
# Called with a CSV file's column names and the header's line number before any row is read.
HeaderCheck = Callable[[list[str], int], None]


class CsvRecords:
    """The rows of a CSV file (UTF-8, an optional BOM, a header row of column names)."""

    kind = "column"

    def __init__(self, path: Path, *, max_line_bytes: int, id_column: str | None = None) -> None:
        self.path = path
        self.columns: list[str] = []
        self.max_line_bytes = max_line_bytes
        self._id_column = id_column

    def read(
        self, on_bytes: ByteProgress | None = None, on_header: HeaderCheck | None = None
    ) -> Iterator[RecordItem]:
        """Every data row as a record keyed by the header; InputError when the header itself
        is unusable (nothing else can be read then), or from ``on_header``."""
        line_problems: list[tuple[int, str]] = []
        lines = self._text_lines(line_problems, on_bytes)
        with _field_size_limit(self.max_line_bytes):
            reader = csv.reader(lines, strict=True)  # an unclosed quote is an error, not a merge
            self.columns = self._header(reader, line_problems)
            if on_header is not None:
                on_header(self.columns, reader.line_num)
            width = len(self.columns)
            read_so_far = reader.line_num
            row_no = 0
            while True:
                try:
                    cells = next(reader, None)
                except csv.Error as exc:
                    start = read_so_far + 1
                    yield start, row_no + 1, None, _csv_problem(exc, start, reader.line_num)
                    return
                if cells is None:
                    return
                line_no, read_so_far = read_so_far + 1, reader.line_num
                if line_problems:
                    for problem_line, reason in line_problems:
                        yield problem_line, row_no + 1, None, reason
                    line_problems.clear()
                    row_no += bool(cells)
                    continue
                if not cells:
                    continue
                row_no += 1
                if len(cells) != width:
                    yield line_no, row_no, None, self._ragged(len(cells))
                    continue
                yield line_no, row_no, dict(zip(self.columns, cells, strict=True)), None

    def _text_lines(
        self, problems: list[tuple[int, str]], on_bytes: ByteProgress | None
    ) -> Iterator[str]:
        """The file's physical lines as text, one per line so csv's line count stays the file's;
        undecodable or over-long lines are noted in ``problems`` (and stand in as best they can)."""
        raw_lines = iter_raw_lines(self.path, max_line_bytes=self.max_line_bytes, on_bytes=on_bytes)
        for line_no, raw, problem in raw_lines:
            if raw is None:
                problems.append((line_no, problem or "unreadable line"))
                yield "\n"
                continue
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append((line_no, f"invalid UTF-8 at byte {exc.start}"))
                yield raw.decode("utf-8", "replace")

    def _header(self, reader: Any, line_problems: list[tuple[int, str]]) -> list[str]:
        """The column names: the first non-blank row; InputError when there is none, or when it
        repeats a name or lacks ``--id-column``."""
        try:
            header: list[str] = next((row for row in reader if row), [])
        except csv.Error as exc:
            problem = _csv_problem(exc, 1, reader.line_num)
            raise InputError(str(self.path), [(1, problem)], 1) from None
        if line_problems:
            raise InputError(str(self.path), list(line_problems), len(line_problems))
        if not header:
            problem = "the file is empty: a header row of column names is required"
            raise InputError(str(self.path), [(None, problem)], 1)
        where = reader.line_num
        seen: dict[str, int] = {}
        for position, name in enumerate(header, 1):
            first = seen.setdefault(name, position)
            if first != position:
                problem = (
                    f"column name {name!r} appears twice in the header "
                    f"(columns {first} and {position})"
                )
                raise InputError(str(self.path), [(where, problem)], 1)
        if self._id_column is not None and self._id_column not in seen:
            problem = (
                f"--id-column {self._id_column!r} is not a column of the file "
                f"(columns: {names_text(header)})"
            )
            raise InputError(str(self.path), [(where, problem)], 1)
        return header

    def _ragged(self, found: int) -> str:
        return (
            f"expected {len(self.columns)} cell(s) like the header "
            f"({names_text(self.columns)}), found {found}"
        )


class JsonlRecords:
    """The records of a JSONL file: one JSON object of fields per line. Its columns are every
    field name seen, in first-seen order (known once the whole file has been read)."""

    kind = "field"

    def __init__(self, path: Path, *, max_line_bytes: int) -> None:
        self.path = path
        self._columns: dict[str, None] = {}
        self.max_line_bytes = max_line_bytes

    @property
    def columns(self) -> list[str]:
        """The field names seen so far."""
        return list(self._columns)

    def read(
        self, on_bytes: ByteProgress | None = None, on_header: HeaderCheck | None = None
    ) -> Iterator[RecordItem]:
        """Every non-blank line as a record, or the reason it is not one (there is no header:
        ``on_header`` is never called)."""
        columns: dict[str, None] = {}
        self._columns = columns
        row_no = 0
        lines = iter_raw_lines(self.path, max_line_bytes=self.max_line_bytes, on_bytes=on_bytes)
        for line_no, raw, problem in lines:
            if raw is None:
                row_no += 1
                yield line_no, row_no, None, problem or "unreadable line"
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                reason = _not_json(raw, exc)
                if reason is not None:
                    row_no += 1
                    yield line_no, row_no, None, reason
                continue
            row_no += 1
            if type(record) is not dict:
                kind = type(record).__name__
                yield line_no, row_no, None, f"expected a JSON object of fields, got {kind}"
                continue
            for name in record:
                if name not in columns:
                    columns[name] = None
            yield line_no, row_no, record, None


def _csv_problem(exc: csv.Error, start: int, end: int) -> str:
    """csv's complaint about the row from line ``start`` that it read up to line ``end``."""
    if str(exc) == "unexpected end of data":
        return "not valid CSV: a quoted cell that starts in this row is never closed"
    where = f" (the row runs to line {end})" if end > start else ""
    return f"not valid CSV: {exc}{where}"


def _not_json(raw: bytes, exc: orjson.JSONDecodeError) -> str | None:
    """Why a line is not JSON; None for a blank line (skipped, as in request files)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"invalid UTF-8 at byte {bad.start}"
    return f"invalid JSON: {exc}" if text.strip() else None


@contextlib.contextmanager
def _field_size_limit(limit: int) -> Iterator[None]:
    """csv's limit on one field (128 KiB by default) raised to the line limit while reading."""
    before = csv.field_size_limit(max(limit, csv.field_size_limit()))
    try:
        yield
    finally:
        csv.field_size_limit(before)


class RecordRequests:
    """A CSV or record-JSONL file as the loader's source (``chatbatch.input.sources.Source``): each
    record rendered through the prompt template into one request for ``model``."""

    def __init__(
        self,
        records: CsvRecords | JsonlRecords,
        template: PromptTemplate,
        *,
        model: str,
        id_column: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.path = records.path
        self._params = params or {}
        self._records = records
        self._template = template
        self._model = model
        self._id_column = id_column

    def entries(self, on_bytes: ByteProgress | None = None) -> Iterator[SourceItem]:
        """(line number, (custom_id, model, body, record JSON), None) per record, or (line
        number, None, reason) for a record that cannot become a request."""
        kind = self._records.kind
        max_bytes = self._records.max_line_bytes
        for line_no, row_no, record, problem in self._records.read(on_bytes, self._check_header):
            if record is None:
                yield line_no, None, problem
                continue
            source = orjson.dumps(record)  # as read: whatever a template tries, this is stored
            try:
                custom_id = self._custom_id(record, row_no)
                messages = self._template.messages(record, kind=kind, max_bytes=max_bytes)
            except RenderTimeout as exc:
                # Most likely every record would take as long: stop rather than wait for each.
                yield line_no, None, f"{exc}; the rest of the file was not read"
                return
            except RenderError as exc:
                yield line_no, None, str(exc)
                continue
            body = {"model": self._model, "messages": messages, **self._params}
            yield line_no, (custom_id, self._model, body, source), None

    def duplicate(self, custom_id: str, first_line: int) -> str:
        """The problem to report for a repeated id."""
        return (
            f"duplicate id {custom_id!r} in {self._records.kind} {self._id_column!r} "
            f"(first on line {first_line})"
        )

    def record_columns(self) -> list[str]:
        """The header (CSV) or every field seen (JSONL), in order; complete after a full read."""
        return self._records.columns

    def _check_header(self, columns: list[str], line_no: int) -> None:
        """InputError at the header when the templates use columns it lacks: one message for
        the file, with a suggestion for each, rather than one per row."""
        problems = self._template.unknown_columns(columns, kind=self._records.kind)
        if problems:
            raise InputError(str(self.path), [(line_no, p) for p in problems], len(problems))

    def _custom_id(self, record: dict[str, Any], row_no: int) -> str:
        """The row number, or the ``--id-column`` value; RenderError when that is unusable."""
        if self._id_column is None:
            return str(row_no)
        kind = self._records.kind
        if self._id_column not in record:
            raise RenderError(f"no {kind} {self._id_column!r} (--id-column) in this record")
        value = record[self._id_column]
        if type(value) is int:
            value = str(value)
        if type(value) is not str:
            raise RenderError(
                f"the id in {kind} {self._id_column!r} must be text or a whole number, "
                f"got {type(value).__name__}"
            )
        if not value.strip():
            raise RenderError(f"the id in {kind} {self._id_column!r} is empty")
        if len(value) > MAX_CUSTOM_ID_CHARS or "\x00" in value:
            raise RenderError(
                f"the id in {kind} {self._id_column!r} is longer than {MAX_CUSTOM_ID_CHARS} "
                "characters or holds a NUL character"
            )
        return value
