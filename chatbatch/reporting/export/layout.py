"""The rules both export writers share: which columns an export has, the header and options it
checks, how one request becomes a JSONL line, and how a value becomes a safe CSV cell.

A CSV row holds, by default: the source record's columns (or ``custom_id`` for a plain request
file), then with a JSON schema the answer's top-level fields, ``schema_valid`` and
``schema_error``, then with gold labels ``gold_match``, then the output columns. ``columns=``
picks and orders any of them. Record columns keep their names; an answer field named like
another column is ``answer.NAME``, an output column named like a record column ``output.NAME``.
Text cells a spreadsheet would run as a formula get a leading ``'``, except record and answer
text that is a plain number. A cell holding a comma, a double quote, CR or LF is in double
quotes on every Python; rows end in LF.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, select

from chatbatch.errors import ChatbatchError
from chatbatch.rules.completions import USAGE_COLUMNS
from chatbatch.rules.quality import GoldRule
from chatbatch.rules.states import ACTIVE_STATUSES, ANSWERED_STATUSES, RequestStatus
from chatbatch.rules.structured import answer_fields
from chatbatch.store.models import batches_table as b

if TYPE_CHECKING:
    from _csv import Writer

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
    "provider",
    "remote_id",
    "submitted_at",
    "completed_at",
    "attempts",
    "retries",
    "possible_duplicates",
    "reused_from",
    "tool_calls",
    "reasoning_content",
    "citations",
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


GOLD_MATCH = "gold_match"  # with --gold-column: whether the answer agrees with the gold label


@dataclass(frozen=True)
class Column:
    """One CSV column: its header ``name``; ``kind`` record, answer, gold or output; and
    ``key``, the record's key, the schema property or the ``OUTPUT_COLUMNS`` name (for gold,
    ``gold_match``) it is filled from."""

    name: str
    kind: str
    key: str


@dataclass(frozen=True)
class CsvLayout:
    """The CSV columns of one export, in order."""

    columns: tuple[Column, ...]
    gold: GoldRule | None = None  # how ``gold_match`` is decided, for a batch with gold labels

    @property
    def header(self) -> list[str]:
        """The header row: each column's name."""
        return [column.name for column in self.columns]

    @property
    def needs_record(self) -> bool:
        """Whether a cell comes from the source record, so each row's record must be parsed."""
        return any(column.kind in ("record", "gold") for column in self.columns)

    @property
    def needs_answer(self) -> bool:
        """Whether a cell comes from the answer's fields, so each answer must be parsed."""
        return any(column.kind in ("answer", "gold") for column in self.columns)

    @property
    def needs_choices(self) -> bool:
        """Whether ``content_2`` … are shown, so each row's further choices must be read."""
        return any(column.kind == "choice" for column in self.columns)

    @property
    def needs_made(self) -> bool:
        """Whether any cell is made here rather than in SQL."""
        return any(column.kind != "output" for column in self.columns)

    @property
    def needs_gold(self) -> bool:
        """Whether ``gold_match`` is shown, so each row's status must be read as well."""
        return any(column.kind == "gold" for column in self.columns)

    def gold_cell(
        self, status: str, record: dict[str, Any], content: str | None, valid: bool | None
    ) -> str | None:
        """The ``gold_match`` cell of one row (``GoldRule.match_cell``)."""
        return None if self.gold is None else self.gold.match_cell(status, record, content, valid)

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
        return CsvLayout(tuple(by_name[name] for name in names), self.gold)


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


def layout_for(
    record_columns: Sequence[str] | None,
    properties: Sequence[str] | None,
    gold: GoldRule | None = None,
    choices: int = 1,
) -> CsvLayout:
    """The default columns of a batch with these record columns (None: a plain request file),
    these schema properties (None: no schema), gold labels (``gold``) and answers of up to
    ``choices`` choices (``content_2`` … at the end). Record columns keep their names; an
    output column named like one gets ``output.``, an answer field named like either
    ``answer.``."""
    records = list(dict.fromkeys(record_columns or ()))
    schema_columns = SCHEMA_COLUMNS if properties is not None else ()
    taken = set(records)
    names = {key: _unique(key, OUTPUT_PREFIX, taken) for key in CSV_COLUMNS + schema_columns}
    golds = [Column(_unique(GOLD_MATCH, OUTPUT_PREFIX, taken), "gold", GOLD_MATCH)] if gold else []
    answers = [
        Column(_unique(key, ANSWER_PREFIX, taken), "answer", key) for key in properties or ()
    ]

    def outputs(keys: Sequence[str]) -> list[Column]:
        return [Column(names[key], "output", key) for key in keys]

    lead = [Column(key, "record", key) for key in records] if records else outputs(CSV_COLUMNS[:1])
    rest = CSV_COLUMNS if records else CSV_COLUMNS[1:]
    further = [
        Column(_unique(f"content_{k}", OUTPUT_PREFIX, taken), "choice", str(k))
        for k in range(2, choices + 1)
    ]
    columns = (*lead, *answers, *outputs(schema_columns), *golds, *outputs(rest), *further)
    return CsvLayout(columns, gold)


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
        select(
            b.c.record_columns,
            b.c.response_schema,
            b.c.gold_column,
            b.c.gold_field,
            b.c.gold_case_sensitive,
            b.c.max_choices,
        ).where(b.c.id == batch_id)
    ).first()
    records = orjson.loads(found.record_columns) if found and found.record_columns else None
    properties = None
    if found and found.response_schema:
        schema = orjson.loads(found.response_schema)
        fields = schema.get("properties") if isinstance(schema, dict) else None
        properties = [str(key) for key in fields] if isinstance(fields, dict) else []
    gold = None
    if found and found.gold_column is not None:
        gold = GoldRule(found.gold_column, found.gold_field, found.gold_case_sensitive)
    choices = found.max_choices if found and found.max_choices else 1
    layout = layout_for(
        [str(key) for key in records] if records else None, properties, gold, choices
    )
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
    csv_writer(header).writerow([safe_text(name) for name in layout.header])
    out.write((BOM if bom else b"") + header.getvalue().encode())
    return layout


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
    """The JSONL error message of a failed request: the stored one, else its status."""
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


def safe_text(value: str | None) -> str | None:
    """Text with a leading ``'`` when a spreadsheet would run it as a formula: the guard."""
    if value and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value
