"""Export on PostgreSQL: every JSONL line and CSV row is built by one SQL expression and read
as bytes in blocks (libpq's chunked rows, or a server-side cursor); Python only joins finished
lines into blocks and writes them.

The expressions give byte for byte what ``export.python``'s writers give for the same
row (the tests compare both on tricky rows). The one case SQL cannot reproduce — re-serialising a
provider's error body, which orjson does — comes back as a marker line that is finished in Python.
CSV cells from source records and answer fields (JSON that SQL would re-serialise differently)
are made in Python from the fetched JSON text, between cells the database built.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import IO, Any, NamedTuple, cast

import orjson
import psycopg
from sqlalchemy import Connection

from chatbatch.reporting.export.layout import (
    ANSWERED,
    FORMULA_PREFIXES,
    OUTPUT_COLUMNS,
    UNFINISHED,
    UNFINISHED_CODE,
    CsvLayout,
    OnRows,
    begin_export,
    csv_writer,
    jsonl_line,
    layout_for,
    unfinished_message,
)
from chatbatch.reporting.export.made import made_cell, made_row
from chatbatch.rules.completions import USAGE_COLUMNS

FETCH_ROWS = 2000
# libpq 17 added chunked-rows mode, which ``cursor.stream(size=...)`` needs; older libpqs read
# through a server-side cursor instead.
CHUNKED_ROWS = psycopg.pq.version() >= 170000
PYTHON_ROW = b"\x01"  # starts a line that Python finishes; a built line starts with "{"
PYTHON_ROW_FIELDS = (
    "id",
    "custom_id",
    "status",
    "remote_id",
    "http_status",
    "response",
    "error_code",
    "error_message",
)


def _json(expr: str) -> str:
    """``expr`` (text) as a JSON string, escaped as orjson escapes it."""
    return f"to_json({expr})::text"


def _one_line(expr: str) -> str:
    """``layout._one_line``: CR/LF between tokens become spaces, then strip."""
    return (
        f"CASE WHEN strpos({expr}, E'\\n') > 0 OR strpos({expr}, E'\\r') > 0 "
        f"THEN btrim(translate({expr}, E'\\r\\n', '  '), E' \\t\\x0b\\x0c') ELSE {expr} END"
    )


def _status_in(statuses: frozenset[str]) -> str:
    """SQL true for a row in one of ``statuses``."""
    return "status IN (" + ", ".join(f"'{s}'" for s in sorted(statuses)) + ")"


def _unfinished_message() -> str:
    """``layout.unfinished_message`` of the row's status, as SQL."""
    before, after = unfinished_message("\x00").split("\x00")
    return f"'{before}' || status || '{after}'"


_SUCCEEDED = _status_in(ANSWERED)
_UNFINISHED = _status_in(UNFINISHED)
_ERROR_CODE = _json("COALESCE(NULLIF(error_code, ''), status)")
_ERROR_MESSAGE = _json("COALESCE(NULLIF(error_message, ''), 'request is ' || status)")
_ERROR = (
    f"CASE WHEN {_SUCCEEDED} THEN 'null' "
    f'WHEN {_UNFINISHED} THEN \'{{"code":"{UNFINISHED_CODE}","message":\' || '
    f"{_json(_unfinished_message())} || '}}' "
    f"ELSE '{{\"code\":' || {_ERROR_CODE} || ',\"message\":' || {_ERROR_MESSAGE} || '}}' END"
)
# The batch name and custom_id of the request a reused answer came from (``reused_source``),
# joined only when a CSV shows them: ``requests`` inside is the exported row. Both read
# ``all_requests``, so an archived batch exports as before.
_REUSED_SOURCE_JOIN = (
    "LEFT JOIN LATERAL (SELECT source_batch.name || '/' || source.custom_id AS reused_source "
    "FROM all_requests AS source JOIN batches AS source_batch ON source_batch.id = source.batch_id "
    "WHERE source.id = requests.reused_from) AS reused ON true"
)


def _jsonl_line(task_id: str) -> str:
    """The JSONL line (or a marker line for Python), ``task_id`` giving the request_id."""
    response = (
        f"CASE WHEN response IS NOT NULL AND {_SUCCEEDED} THEN "
        "'{\"status_code\":' || COALESCE(NULLIF(http_status, 0), 200) || ',\"request_id\":' || "
        f"COALESCE({_json(task_id)}, 'null') || ',\"body\":' || {_one_line('response')} || '}}' "
        "ELSE 'null' END"
    )
    return (
        "CASE WHEN response IS NOT NULL AND NOT {succeeded} AND NOT {unfinished} "
        "AND http_status >= 400 "
        "THEN E'\\x01' || json_build_array({fields})::text "
        'ELSE \'{{"id":"batch_req_\' || id || \'","custom_id":\' || {custom_id} || '
        "',\"response\":' || {response} || ',\"error\":' || {error} || '}}' END || E'\\n'"
    ).format(
        succeeded=_SUCCEEDED,
        unfinished=_UNFINISHED,
        fields=", ".join(task_id if f == "remote_id" else f for f in PYTHON_ROW_FIELDS),
        custom_id=_json("custom_id"),
        response=response,
        error=_ERROR,
    )


JSONL_LINE = _jsonl_line("remote_id")


def _python_quotes(char: str) -> bool:
    """Whether ``write_csv``'s writer (``csv_writer``) quotes a cell holding ``char``, so the SQL
    quotes exactly what Python does (all four, on every Python, since ``csv_writer`` makes sure
    of CR)."""
    buffer = io.StringIO()
    csv_writer(buffer).writerow([f"a{char}b", "c"])
    return buffer.getvalue().startswith('"')


_CSV_QUOTED_CHARS = [c for c in (",", '"', "\n", "\r") if _python_quotes(c)]
_SQL_CHAR = {",": "','", '"': "'\"'", "\n": "E'\\n'", "\r": "E'\\r'"}
# ascii() of the first character is cheaper than comparing one-character strings.
_FORMULA_CODES = ", ".join(
    str(ord(p))
    for p in FORMULA_PREFIXES
    if p != "\x00"  # PostgreSQL text cannot hold NUL
)


def _csv_text(expr: str, *, safe: bool = True) -> str:
    """A text cell as ``write_csv`` writes it: empty for NULL; with a leading quote when a
    spreadsheet would run it as a formula (``layout.safe_text``); in double quotes when
    ``csv_writer`` would use them (the leading quote never changes whether they are needed)."""
    needs_quotes = " OR ".join(f"strpos({expr}, {_SQL_CHAR[c]}) > 0" for c in _CSV_QUOTED_CHARS)
    formula = f"ascii({expr}) IN ({_FORMULA_CODES})"
    escaped = f"replace({expr}, '\"', '\"\"')"
    if not safe:
        return (
            f"CASE WHEN {expr} IS NULL THEN '' "
            f"WHEN {needs_quotes} THEN '\"' || {escaped} || '\"' ELSE {expr} END"
        )
    return (
        f"CASE WHEN {expr} IS NULL THEN '' WHEN {needs_quotes} THEN "
        f"CASE WHEN {formula} THEN '\"''' ELSE '\"' END || {escaped} || '\"' "
        f"WHEN {formula} THEN '''' || {expr} ELSE {expr} END"
    )


def _iso(expr: str) -> str:
    """``datetime.isoformat()`` of a UTC timestamp: microseconds only when not zero."""
    utc = f"({expr} AT TIME ZONE 'UTC')"
    return (
        f'COALESCE(replace(to_char({utc}, \'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"\'), '
        "'.000000+', '+'), '')"
    )


def _number(expr: str) -> str:
    return f"COALESCE(({expr})::text, '')"


def _finished_only(cell: str) -> str:
    """``cell``, empty for a request not finished yet (``python.output_cells``)."""
    return f"CASE WHEN {_UNFINISHED} THEN '' ELSE {cell} END"


def _csv_cells(task_id: str) -> dict[str, str]:
    """Each output column's cell, ``task_id`` giving the remote_id."""
    return {
        "custom_id": _csv_text("custom_id"),
        "status": _csv_text("status", safe=False),
        "content": _csv_text("content"),
        "finish_reason": _csv_text("finish_reason"),
        "model": _csv_text("COALESCE(NULLIF(response_model, ''), model)"),
        **{name: _number(name) for name in USAGE_COLUMNS},
        "error_code": _finished_only(_csv_text("error_code")),
        "error_message": _finished_only(_csv_text("error_message")),
        "provider": _csv_text("provider"),
        "remote_id": _csv_text(task_id),
        "submitted_at": _iso("submitted_at"),
        "completed_at": _iso("completed_at"),
        "attempts": _number("attempts"),
        "retries": _number("retries"),
        "possible_duplicates": _number("ambiguous_submits"),
        "reused_from": _csv_text("reused_source"),
        "tool_calls": _csv_text("tool_calls"),
        "reasoning_content": _csv_text("reasoning_content"),
        "citations": _csv_text("citations"),
        "schema_valid": "CASE WHEN schema_valid THEN 'true' WHEN NOT schema_valid THEN 'false' "
        "ELSE '' END",
        "schema_error": _csv_text("schema_error"),
    }


CSV_CELLS = _csv_cells("remote_id")
assert tuple(CSV_CELLS) == OUTPUT_COLUMNS


def csv_row_sql(layout: CsvLayout, cells: dict[str, str] = CSV_CELLS) -> str:
    """One CSV line (with its newline) built in SQL; every column must be an output column."""
    row = [cells[column.key] for column in layout.columns]
    if len(row) == 1:  # csv.writer quotes a lone empty cell, or the line would look blank
        row = [f"COALESCE(NULLIF({row[0]}, ''), '\"\"')"]
    return " || ',' || ".join(row) + " || E'\\n'"


CSV_ROW = csv_row_sql(layout_for(None, None))


class Wanted(NamedTuple):
    """Which requests an export reads: the batch's, only ``statuses`` when given; with
    ``reused_source`` (the source of a reused answer) joined when a cell needs it."""

    batch_id: str
    statuses: tuple[str, ...] | None = None
    reused_source: bool = False

    def query(self, selected: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        """The SELECT of ``selected`` expressions over these requests in input order, and its
        parameters."""
        joined = f" {_REUSED_SOURCE_JOIN}" if self.reused_source else ""
        where = "batch_id = %s"
        params: list[Any] = [self.batch_id]
        if self.statuses is not None:
            where += " AND status = ANY(%s)"
            params.append(list(self.statuses))
        columns = ", ".join(selected).replace("%", "%%")
        text = f"SELECT {columns} FROM all_requests AS requests{joined} "
        return text + f"WHERE {where} ORDER BY line_no", tuple(params)


def export_postgres(
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
    """Write the batch's lines (``fmt`` jsonl or csv; only requests in ``statuses`` when given)
    to ``out`` in input order; the count. ``on_rows`` hears how many rows each block wrote."""
    layout = begin_export(conn, batch_id, out, fmt, columns=columns, bom=bom, statuses=statuses)
    wanted = Wanted(batch_id, tuple(statuses) if statuses is not None else None)
    blocks: Iterator[tuple[bytes, int]]
    if layout is None:
        blocks = iter_blocks(conn, wanted, JSONL_LINE)
    else:
        shows_source = any(c.kind == "output" and c.key == "reused_from" for c in layout.columns)
        wanted = wanted._replace(reused_source=shows_source)
        if layout.needs_made:
            blocks = _assembled_blocks(conn, wanted, layout, CSV_CELLS)
        else:
            blocks = iter_blocks(conn, wanted, csv_row_sql(layout, CSV_CELLS))
    count = 0
    for block, rows in blocks:
        # (a CSV cell may hold the marker byte; only JSONL lines are ever marked)
        out.write(_finish_python_rows(block) if layout is None and PYTHON_ROW in block else block)
        count += rows
        if on_rows:
            on_rows(rows)
    return count


def _assembled_blocks(
    conn: Connection, wanted: Wanted, layout: CsvLayout, cells: dict[str, str]
) -> Iterator[tuple[bytes, int]]:
    """CSV lines whose record and answer cells are made here: SQL builds each run of output
    columns as one piece, and sends the record and the answer as they are stored."""
    pieces: list[str] = []  # SQL for each run of output columns
    plan: list[tuple[str, Any]] = []  # ("sql", index of the piece) | ("record"/"answer", key)
    for column in layout.columns:
        if column.kind != "output":
            plan.append((column.kind, column.key))
        elif plan and plan[-1][0] == "sql":
            pieces[-1] += " || ',' || " + cells[column.key]
        else:
            plan.append(("sql", len(pieces)))
            pieces.append(cells[column.key])
    at = len(pieces)  # where the columns made here start in each row
    selected = [
        *pieces,
        "status",
        "record" if layout.needs_record else "NULL",
        *(("content", "schema_valid") if layout.needs_answer else ("NULL", "NULL")),
        "other_contents" if layout.needs_choices else "NULL",
    ]
    lone = len(layout.columns) == 1
    for rows in _row_blocks(conn, wanted, selected):
        lines = []
        for row in rows:
            made = made_row(layout, *row[at:])
            line = ",".join(
                [
                    row[key] if kind == "sql" else _quoted(made_cell(kind, key, made))
                    for kind, key in plan
                ]
            )
            lines.append(('""' if lone and not line else line) + "\n")
        yield "".join(lines).encode(), len(rows)


def _quoted(cell: str | None) -> str:
    """A cell as ``csv_writer`` (which ``write_csv`` uses) writes it."""
    if cell is None:
        return ""
    if any(char in cell for char in _CSV_QUOTED_CHARS):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def iter_blocks(conn: Connection, wanted: Wanted, line_sql: str) -> Iterator[tuple[bytes, int]]:
    """The requests' lines, as built by ``line_sql``, joined in blocks of up to ``FETCH_ROWS``."""
    for rows in _row_blocks(conn, wanted, [f"convert_to({line_sql}, 'UTF8')"]):
        yield b"".join([row[0] for row in rows]), len(rows)


def _row_blocks(
    conn: Connection, wanted: Wanted, selected: Sequence[str]
) -> Iterator[list[tuple[Any, ...]]]:
    """The requests' rows of ``selected`` expressions in input order, up to ``FETCH_ROWS`` at a
    time; one query (one snapshot) in the caller's transaction, in constant memory."""
    conn.exec_driver_sql("SELECT 1")  # the query runs in a transaction SQLAlchemy knows of
    dbapi = cast(psycopg.Connection[Any], conn.connection.dbapi_connection)
    query, params = wanted.query(selected)
    if CHUNKED_ROWS:
        yield from _streamed_rows(dbapi, query, params)
        return
    with dbapi.cursor("chatbatch_export", binary=True) as cursor:
        cursor.execute(query, params)
        while rows := cursor.fetchmany(FETCH_ROWS):
            yield rows


def _streamed_rows(
    dbapi: psycopg.Connection[Any], query: str, params: tuple[Any, ...]
) -> Iterator[list[tuple[Any, ...]]]:
    """Rows as the server sends them, ``FETCH_ROWS`` per result (libpq's chunked-rows mode): no
    round trip per block, and unlike a cursor (DECLARE) the query may use a parallel plan."""
    block: list[tuple[Any, ...]] = []
    with dbapi.cursor(binary=True) as cursor:
        for row in cursor.stream(query, params, size=FETCH_ROWS):
            block.append(row)
            if len(block) == FETCH_ROWS:
                yield block
                block = []
    if block:
        yield block


def _finish_python_rows(block: bytes) -> bytes:
    """Replace each marker line in ``block`` by the line ``jsonl_line`` makes of its fields."""
    lines = block.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(PYTHON_ROW):
            fields = dict(zip(PYTHON_ROW_FIELDS, orjson.loads(line[1:]), strict=True))
            lines[i] = jsonl_line(SimpleNamespace(**fields))[:-1]
    return b"\n".join(lines)
