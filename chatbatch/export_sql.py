"""Export on PostgreSQL: every JSONL line and CSV row is built by one SQL expression and read
from a server-side cursor as bytes; Python only joins finished lines into blocks and writes them.

The expressions give byte for byte what ``chatbatch.export``'s Python writers give for the same
row (the tests compare both on tricky rows). The one case SQL cannot reproduce — re-serialising a
provider's error body, which orjson does — comes back as a marker line that is finished in Python.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from types import SimpleNamespace
from typing import IO, Any, cast

import orjson
import psycopg
from sqlalchemy import Connection

from chatbatch.completions import USAGE_COLUMNS
from chatbatch.export import CSV_COLUMNS, FORMULA_PREFIXES, jsonl_line

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
    """``chatbatch.export._one_line``: CR/LF between tokens become spaces, then strip."""
    return (
        f"CASE WHEN strpos({expr}, E'\\n') > 0 OR strpos({expr}, E'\\r') > 0 "
        f"THEN btrim(translate({expr}, E'\\r\\n', '  '), E' \\t\\x0b\\x0c') ELSE {expr} END"
    )


_SUCCEEDED = "status = 'succeeded'"
_RESPONSE = (
    f"CASE WHEN response IS NOT NULL AND {_SUCCEEDED} THEN "
    "'{\"status_code\":' || COALESCE(NULLIF(http_status, 0), 200) || ',\"request_id\":' || "
    f"COALESCE({_json('remote_id')}, 'null') || ',\"body\":' || {_one_line('response')} || '}}' "
    "ELSE 'null' END"
)
_ERROR_CODE = _json("COALESCE(NULLIF(error_code, ''), status)")
_ERROR_MESSAGE = _json("COALESCE(NULLIF(error_message, ''), 'request is ' || status)")
_ERROR = (
    f"CASE WHEN {_SUCCEEDED} THEN 'null' ELSE '{{\"code\":' || {_ERROR_CODE} || "
    f"',\"message\":' || {_ERROR_MESSAGE} || '}}' END"
)
JSONL_LINE = (
    "CASE WHEN response IS NOT NULL AND NOT {succeeded} AND http_status >= 400 "
    "THEN E'\\x01' || json_build_array({fields})::text "
    'ELSE \'{{"id":"batch_req_\' || id || \'","custom_id":\' || {custom_id} || '
    "',\"response\":' || {response} || ',\"error\":' || {error} || '}}' END || E'\\n'"
).format(
    succeeded=_SUCCEEDED,
    fields=", ".join(PYTHON_ROW_FIELDS),
    custom_id=_json("custom_id"),
    response=_RESPONSE,
    error=_ERROR,
)


def _python_quotes(char: str) -> bool:
    """Whether ``csv.writer`` (as ``write_csv`` sets it up) quotes a cell holding ``char``;
    '\\r' changed between Python versions."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([f"a{char}b", "c"])
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
    spreadsheet would run it as a formula (``chatbatch.export._safe``); in double quotes when
    ``csv.writer`` would use them (the leading quote never changes whether they are needed)."""
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


CSV_CELLS = {
    "custom_id": _csv_text("custom_id"),
    "status": _csv_text("status", safe=False),
    "content": _csv_text("content"),
    "finish_reason": _csv_text("finish_reason"),
    "model": _csv_text("COALESCE(NULLIF(response_model, ''), model)"),
    **{name: _number(name) for name in USAGE_COLUMNS},
    "error_code": _csv_text("error_code"),
    "error_message": _csv_text("error_message"),
    "remote_id": _csv_text("remote_id"),
    "submitted_at": _iso("submitted_at"),
    "completed_at": _iso("completed_at"),
    "attempts": _number("attempts"),
    "retries": _number("retries"),
    "possible_duplicates": _number("ambiguous_submits"),
}
assert tuple(CSV_CELLS) == CSV_COLUMNS
CSV_ROW = " || ',' || ".join(CSV_CELLS.values()) + " || E'\\n'"


def export_postgres(conn: Connection, batch_id: str, out: IO[bytes], fmt: str) -> int:
    """Write the batch's lines (``fmt`` jsonl or csv) to ``out`` in input order; the count."""
    if fmt == "csv":
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(CSV_COLUMNS)
        out.write(header.getvalue().encode())
    jsonl = fmt != "csv"
    count = 0
    for block, rows in iter_blocks(conn, batch_id, JSONL_LINE if jsonl else CSV_ROW):
        # (a CSV cell may hold the marker byte; only JSONL lines are ever marked)
        out.write(_finish_python_rows(block) if jsonl and PYTHON_ROW in block else block)
        count += rows
    return count


def iter_blocks(conn: Connection, batch_id: str, line_sql: str) -> Iterator[tuple[bytes, int]]:
    """The batch's lines, as built by ``line_sql``, joined in blocks of up to ``FETCH_ROWS``;
    one query (one snapshot) in the caller's transaction, in constant memory."""
    conn.exec_driver_sql("SELECT 1")  # the query runs in a transaction SQLAlchemy knows of
    dbapi = cast(psycopg.Connection[Any], conn.connection.dbapi_connection)
    query = (
        f"SELECT convert_to({line_sql.replace('%', '%%')}, 'UTF8') FROM requests "
        "WHERE batch_id = %s ORDER BY line_no"
    )
    if CHUNKED_ROWS:
        yield from _streamed_blocks(dbapi, query, batch_id)
        return
    with dbapi.cursor("chatbatch_export", binary=True) as cursor:
        cursor.execute(query, (batch_id,))
        while rows := cursor.fetchmany(FETCH_ROWS):
            yield b"".join([row[0] for row in rows]), len(rows)


def _streamed_blocks(
    dbapi: psycopg.Connection[Any], query: str, batch_id: str
) -> Iterator[tuple[bytes, int]]:
    """Rows as the server sends them, ``FETCH_ROWS`` per result (libpq's chunked-rows mode): no
    round trip per block, and unlike a cursor (DECLARE) the query may use a parallel plan."""
    block: list[bytes] = []
    with dbapi.cursor(binary=True) as cursor:
        for (line,) in cursor.stream(query, (batch_id,), size=FETCH_ROWS):
            block.append(line)
            if len(block) == FETCH_ROWS:
                yield b"".join(block), FETCH_ROWS
                block = []
    if block:
        yield b"".join(block), len(block)


def _finish_python_rows(block: bytes) -> bytes:
    """Replace each marker line in ``block`` by the line ``jsonl_line`` makes of its fields."""
    lines = block.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(PYTHON_ROW):
            fields = dict(zip(PYTHON_ROW_FIELDS, orjson.loads(line[1:]), strict=True))
            lines[i] = jsonl_line(SimpleNamespace(**fields))[:-1]  # type: ignore[arg-type]
    return b"\n".join(lines)
