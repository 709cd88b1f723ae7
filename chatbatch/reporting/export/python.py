"""Stream a batch's results to JSONL (the OpenAI Batch output shape) or CSV, in input order.

A CSV row holds, by default: the source record's columns (or ``custom_id`` for a plain request
file), then with a JSON schema the answer's top-level fields, ``schema_valid`` and
``schema_error``, then the output columns. ``columns=`` picks and orders any of them. Record
columns keep their names; an answer field named like another column is ``answer.NAME``, an
output column named like a record column ``output.NAME``. Text cells a spreadsheet would run as
a formula get a leading ``'``, except record and answer text that is a plain number. A cell
holding a comma, a double quote, CR or LF is in double quotes on every Python; rows end in LF.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, Row, select

from chatbatch.errors import ChatbatchError
from chatbatch.rules.completions import USAGE_COLUMNS
from chatbatch.rules.states import ACTIVE_STATUSES, ANSWERED_STATUSES, RequestStatus
from chatbatch.rules.structured import answer_fields
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import requests_table as r

if TYPE_CHECKING:
    from _csv import Writer

STREAM_ROWS = 2000
BOM = b"\xef\xbb\xbf"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\x00")
ANSWERED = frozenset(str(s) for s in ANSWERED_STATUSES)
# Not finished yet: exported with this error code, never as an error of their own.
UNFINISHED = frozenset(str(s) for s in ACTIVE_STATUSES)
UNFINISHED_CODE = "unfinished"
STATUS_NAMES = tuple(s.value for s in RequestStatus)
CSV_COLUMNS = (
    "custom_id",
    "status",
    "content",
    "finish_reason",
    "model",
    *USAGE_COLUMNS,
    "error_code",
    "error_message",
    "remote_id",
    "submitted_at",
    "completed_at",
    "attempts",
    "retries",
    "possible_duplicates",
    "reused_from",
)
SCHEMA_COLUMNS = ("schema_valid", "schema_error")  # only for batches with a JSON schema
OUTPUT_COLUMNS = CSV_COLUMNS + SCHEMA_COLUMNS  # every cell made from the request row alone
# Header prefixes that keep names unique: an answer field named like a record or output column,
# an output column named like a record column.
ANSWER_PREFIX = "answer."
OUTPUT_PREFIX = "output."
# Text that is a plain number cannot run as a formula; record and answer cells keep it as is.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

OnRows = Callable[[int], None]


class ExportError(ChatbatchError):
    """An export asked for something the batch or format does not have: a usage error."""

    exit_code = 2


@dataclass(frozen=True)
class Column:
    """One CSV column: its header ``name``; ``kind`` record, answer or output; and ``key``, the
    record's key, the schema property or the ``OUTPUT_COLUMNS`` name it is filled from."""

    name: str
    kind: str
    key: str


@dataclass(frozen=True)
class CsvLayout:
    """The CSV columns of one export, in order."""

    columns: tuple[Column, ...]

    @property
    def header(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def needs_record(self) -> bool:
        return any(column.kind == "record" for column in self.columns)

    @property
    def needs_answer(self) -> bool:
        return any(column.kind == "answer" for column in self.columns)

    def select(self, names: Sequence[str]) -> CsvLayout:
        """The columns called ``names``, in that order; ExportError listing the available
        names when one is unknown."""
        by_name = {column.name: column for column in self.columns}
        unknown = [name for name in names if name not in by_name]
        if unknown:
            raise ExportError(
                f"unknown column(s): {', '.join(unknown)}; this batch has: {', '.join(self.header)}"
            )
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ExportError(f"column(s) named more than once: {', '.join(repeated)}")
        if not names:
            raise ExportError("no column chosen")
        return CsvLayout(tuple(by_name[name] for name in names))


def unfinished_message(status: str) -> str:
    """The JSONL error message of a request that has no outcome yet: its real status."""
    return f"not finished yet (status {status})"


def parse_statuses(text: str) -> tuple[str, ...]:
    """``failed, expired`` → ``("failed", "expired")``: request statuses, checked, each once."""
    return check_statuses([part.strip().lower() for part in text.split(",") if part.strip()])


def check_statuses(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as known request statuses, each once; ExportError listing the statuses when
    one is unknown or none is given."""
    unknown = [name for name in names if name not in STATUS_NAMES]
    if unknown or not names:
        raise ExportError(
            f"--status: {', '.join(unknown) or 'nothing given'}; choose from "
            f"{', '.join(STATUS_NAMES)}"
        )
    return tuple(dict.fromkeys(names))


def layout_for(record_columns: Sequence[str] | None, properties: Sequence[str] | None) -> CsvLayout:
    """The default columns of a batch with these record columns (None: a plain request file) and
    these schema properties (None: no schema). Record columns keep their names; an output
    column named like one gets ``output.``, an answer field named like either ``answer.``."""
    records = list(dict.fromkeys(record_columns or ()))
    schema_columns = SCHEMA_COLUMNS if properties is not None else ()
    taken = set(records)
    names = {key: _unique(key, OUTPUT_PREFIX, taken) for key in CSV_COLUMNS + schema_columns}
    answers = [
        Column(_unique(key, ANSWER_PREFIX, taken), "answer", key) for key in properties or ()
    ]

    def outputs(keys: Sequence[str]) -> list[Column]:
        return [Column(names[key], "output", key) for key in keys]

    lead = [Column(key, "record", key) for key in records] if records else outputs(CSV_COLUMNS[:1])
    rest = CSV_COLUMNS if records else CSV_COLUMNS[1:]
    return CsvLayout((*lead, *answers, *outputs(schema_columns), *outputs(rest)))


def _unique(name: str, prefix: str, taken: set[str]) -> str:
    """``name``, prefixed until no earlier column has it; then it is taken too."""
    while name in taken:
        name = prefix + name
    taken.add(name)
    return name


PLAIN_LAYOUT = layout_for(None, None)


def batch_layout(
    conn: Connection, batch_id: str, columns: Sequence[str] | None = None
) -> CsvLayout:
    """The CSV columns of the batch's export: its default ones, or ``columns`` from them."""
    found = conn.execute(
        select(b.c.record_columns, b.c.response_schema).where(b.c.id == batch_id)
    ).first()
    records = orjson.loads(found.record_columns) if found and found.record_columns else None
    properties = None
    if found and found.response_schema:
        schema = orjson.loads(found.response_schema)
        fields = schema.get("properties") if isinstance(schema, dict) else None
        properties = [str(key) for key in fields] if isinstance(fields, dict) else []
    layout = layout_for([str(key) for key in records] if records else None, properties)
    return layout if columns is None else layout.select(columns)


def begin_export(
    conn: Connection,
    batch_id: str,
    out: IO[bytes],
    fmt: str,
    *,
    columns: Sequence[str] | None = None,
    bom: bool = False,
    statuses: Sequence[str] | None = None,
) -> CsvLayout | None:
    """Check the options, write the BOM and CSV header; the CSV layout (None for JSONL)."""
    if statuses is not None:
        check_statuses(statuses)
    if fmt == "jsonl":
        if columns is not None or bom:
            raise ExportError("--columns and --bom are for CSV exports")
        return None
    if fmt != "csv":
        raise ExportError(f"unknown export format {fmt!r}")
    layout = batch_layout(conn, batch_id, columns)
    header = io.StringIO()
    csv_writer(header).writerow([_safe(name) for name in layout.header])
    out.write((BOM if bom else b"") + header.getvalue().encode())
    return layout


def iter_results(
    conn: Connection, batch_id: str, statuses: Sequence[str] | None = None
) -> Iterator[Row[Any]]:
    """Rows in input order (only those in ``statuses`` when given) from a server-side cursor,
    so memory does not grow with the batch. ``reused_from`` is ``<batch name>/<custom_id>`` of
    the request a reused answer came from (None when that request is gone)."""
    source = r.alias("source")
    source_batch = b.alias("source_batch")
    reused_from = (source_batch.c.name + "/" + source.c.custom_id).label("reused_from")
    joined = r.outerjoin(source, source.c.id == r.c.reused_from).outerjoin(
        source_batch, source_batch.c.id == source.c.batch_id
    )
    selected: tuple[Any, ...] = (*_selected(), reused_from)
    stmt = select(*selected).select_from(joined).where(r.c.batch_id == batch_id)
    if statuses is not None:
        stmt = stmt.where(r.c.status.in_(list(statuses)))
    result = conn.execution_options(yield_per=STREAM_ROWS).execute(stmt.order_by(r.c.line_no))
    yield from result


def _selected() -> tuple[Any, ...]:
    return (
        r.c.id,
        r.c.custom_id,
        r.c.status,
        r.c.remote_id,  # a reused answer carries its source's task id
        r.c.http_status,
        r.c.response,
        r.c.content,
        r.c.finish_reason,
        r.c.response_model,
        r.c.model,
        *(r.c[name] for name in USAGE_COLUMNS),
        r.c.error_code,
        r.c.error_message,
        r.c.submitted_at,
        r.c.completed_at,
        r.c.attempts,
        r.c.retries,
        r.c.ambiguous_submits,
        r.c.schema_valid,
        r.c.schema_error,
        r.c.record,
    )


def write_jsonl(rows: Iterator[Any], out: IO[bytes], on_rows: OnRows | None = None) -> int:
    """One OpenAI-Batch-shaped output line per request; the provider's body passes through."""
    count = 0
    for row in rows:
        out.write(jsonl_line(row))
        count += 1
        if on_rows and count % STREAM_ROWS == 0:
            on_rows(STREAM_ROWS)
    if on_rows and count % STREAM_ROWS:
        on_rows(count % STREAM_ROWS)
    return count


def jsonl_line(row: Any) -> bytes:
    """``{"id", "custom_id", "response": {...} | null, "error": null | {"code", "message"}}``;
    a reused answer is written as the success it copies, a request not finished yet as
    ``"response": null`` and the error code ``unfinished`` (its status in the message)."""
    head = b'{"id":' + orjson.dumps(f"batch_req_{row.id}") + b',"custom_id":'
    head += orjson.dumps(row.custom_id) + b',"response":'
    succeeded = row.status in ANSWERED
    body = _response_body(row, succeeded)
    if body is None:
        head += b"null"
    else:
        status_code = row.http_status or 200
        head += b'{"status_code":' + str(status_code).encode() + b',"request_id":'
        head += orjson.dumps(row.remote_id) + b',"body":' + body + b"}"
    head += b',"error":'
    if succeeded:
        return head + b"null}\n"
    if row.status in UNFINISHED:
        error = {"code": UNFINISHED_CODE, "message": unfinished_message(row.status)}
    else:
        error = {"code": row.error_code or row.status, "message": _error_message(row)}
    return head + orjson.dumps(error) + b"}\n"


def _response_body(row: Any, succeeded: bool) -> bytes | None:
    """The stored body as JSON bytes: verbatim when we parsed it on arrival, else checked."""
    if row.response is None:
        return None
    if succeeded:
        return _one_line(row.response.encode())
    if not row.http_status or row.http_status < 400 or row.status in UNFINISHED:
        return None
    try:
        return orjson.dumps(orjson.loads(row.response))
    except orjson.JSONDecodeError:
        return orjson.dumps(row.response)


def _one_line(body: bytes) -> bytes:
    """The body on one line, otherwise byte for byte. Valid JSON can hold CR or LF only as
    whitespace between tokens (inside strings they must be escaped), so turning them into
    spaces changes no value."""
    if b"\n" in body or b"\r" in body:
        return body.replace(b"\r", b" ").replace(b"\n", b" ").strip()
    return body


def _error_message(row: Any) -> str:
    if row.error_message:
        return str(row.error_message)
    return f"request is {row.status}"


class _LfRows:
    """The file ``csv_writer`` writes to: each row reaches ``out`` ending in LF, not CRLF."""

    __slots__ = ("_write",)

    def __init__(self, out: IO[str]) -> None:
        self._write = out.write

    def write(self, row: str) -> int:
        """Write ``row`` (one whole row, as ``csv.writer`` hands it over) with LF for its CRLF."""
        return self._write(row[:-2] + "\n")


def csv_writer(out: IO[str]) -> Writer:
    """A ``csv.writer`` whose rows end in LF and that quotes every cell holding CR or LF, on every
    Python: 3.11's quotes only the delimiter, the quote and the line terminator's characters, so
    a bare CR would start a spreadsheet row (and a formula after it would run). Its terminator
    is CRLF, turned into LF as each row is written: one C writer for every row, nearly as fast."""
    return csv.writer(_LfRows(out), lineterminator="\r\n")


def write_csv(
    rows: Iterator[Any],
    out: IO[str],
    layout: CsvLayout = PLAIN_LAYOUT,
    on_rows: OnRows | None = None,
) -> int:
    """One row per request in ``layout`` (header excluded, ``begin_export`` writes it); cells a
    spreadsheet would run as formulas are neutralised."""
    writer = csv_writer(out)
    plan = [
        (c.kind, c.key, OUTPUT_COLUMNS.index(c.key) if c.kind == "output" else -1)
        for c in layout.columns
    ]
    needs_record, needs_answer = layout.needs_record, layout.needs_answer
    count = 0
    for row in rows:
        outputs = output_cells(row)
        record = parse_record(row.record) if needs_record else {}
        answer = answer_values(row.content, row.schema_valid) if needs_answer else {}
        writer.writerow(
            [
                outputs[index]
                if kind == "output"
                else value_cell((record if kind == "record" else answer).get(key))
                for kind, key, index in plan
            ]
        )
        count += 1
        if on_rows and count % STREAM_ROWS == 0:
            on_rows(STREAM_ROWS)
    if on_rows and count % STREAM_ROWS:
        on_rows(count % STREAM_ROWS)
    return count


def csv_cells(row: Any) -> list[Any]:
    """The CSV cells of one request of a plain batch, in ``CSV_COLUMNS`` order."""
    return output_cells(row)[: len(CSV_COLUMNS)]


def output_cells(row: Any) -> list[Any]:
    """The cells made from the request row alone, in ``OUTPUT_COLUMNS`` order; a request not
    finished yet has empty error cells (a transient error on its way is no outcome)."""
    finished = row.status not in UNFINISHED
    return [
        _safe(row.custom_id),
        row.status,
        _safe(row.content),
        _safe(row.finish_reason),
        _safe(row.response_model or row.model),
        *(getattr(row, name) for name in USAGE_COLUMNS),
        _safe(row.error_code) if finished else None,
        _safe(row.error_message) if finished else None,
        _safe(row.remote_id),
        _iso(row.submitted_at),
        _iso(row.completed_at),
        row.attempts,
        row.retries,
        row.ambiguous_submits,
        _safe(row.reused_from),
        None if row.schema_valid is None else ("true" if row.schema_valid else "false"),
        _safe(row.schema_error),
    ]


def parse_record(text: str | None) -> dict[str, Any]:
    """The stored source record (a JSON object), or nothing. Read with ``json``, which keeps
    integers beyond 64 bits exact (orjson would turn them into floats)."""
    value = json.loads(text) if text else None
    return value if isinstance(value, dict) else {}


def answer_values(content: str | None, schema_valid: bool | None) -> dict[str, Any]:
    """The top-level fields of an answer that passed its schema (or has no verdict yet and is a
    JSON object); nothing for an invalid one."""
    if schema_valid is False:
        return {}
    return answer_fields(content) or {}


def value_cell(value: Any) -> str | None:
    """A record or answer value as a cell: text as given (neutralised if formula-like), empty for
    null, anything else compact JSON (a number we write is never neutralised)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.startswith(FORMULA_PREFIXES) and not _PLAIN_NUMBER.fullmatch(value):
            return "'" + value
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _safe(value: str | None) -> str | None:
    if value and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def export_python(
    conn: Connection,
    batch_id: str,
    out: IO[bytes],
    fmt: str,
    *,
    columns: Sequence[str] | None = None,
    bom: bool = False,
    statuses: Sequence[str] | None = None,
    on_rows: OnRows | None = None,
) -> int:
    """``export_batch`` with every line built here (SQLite, and the reference for the SQL)."""
    layout = begin_export(conn, batch_id, out, fmt, columns=columns, bom=bom, statuses=statuses)
    rows = iter_results(conn, batch_id, statuses)
    if layout is None:
        return write_jsonl(rows, out, on_rows)
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        return write_csv(rows, text, layout, on_rows)
    finally:
        text.detach()
