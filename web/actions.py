"""The operator's buttons: cancel, retry and resume (POST, with the page's CSRF token; refused
in read-only mode), and the downloads (the export as JSONL or CSV, streamed, and the report).
Each button runs the same function as its command (``chatbatch.operations``) in one
transaction and answers ``{name, status, changed, message}`` as ``--json`` prints it."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import IO, Any

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from chatbatch.errors import ChatbatchError, NotFoundError
from chatbatch.operations import controls
from chatbatch.operations.controls import CommandResult
from chatbatch.operations.retry import retry, retry_choice
from chatbatch.reporting.export import export_batch
from chatbatch.reporting.report import render_report
from chatbatch.reporting.report_data import collect
from chatbatch.store import reads
from chatbatch.store.db import db_now
from chatbatch.store.dialect import read_snapshot
from web import security
from web.context import JSON, dashboard_of, path_batch, prices_for, reading
from web.streaming import Download, relayed

Command = Callable[[Connection, datetime], CommandResult]
EXPORT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


async def control(request: Request) -> Response:
    """Run the button's command on the batch and say what it did."""
    form = await request.form()
    refusal = _refusal(request, form)
    if refusal is not None:
        return refusal
    try:
        command = _command(request.path_params["action"], request.path_params["batch"], form)
        result = await run_in_threadpool(_run, request, command)
    except ValueError as exc:
        return JSON({"error": str(exc)}, status_code=400)
    except NotFoundError as exc:
        return JSON({"error": str(exc)}, status_code=404)
    except ChatbatchError as exc:
        return JSON({"error": str(exc)}, status_code=409)
    answer = dataclasses.asdict(result)
    if (
        result.changed
        and result.status in ("running", "cancelling")
        and not dashboard_of(request).broker
    ):
        answer["hint"] = f"no broker is configured: `chatbatch process {result.name}` works it"
    return JSON(answer)


def _refusal(request: Request, form: FormData) -> Response | None:
    """403 in read-only mode or without this page's CSRF token."""
    if dashboard_of(request).read_only:
        return JSON({"error": "the dashboard is read-only (serve --read-only)"}, 403)
    offered = request.headers.get(security.CSRF_HEADER) or form.get(security.CSRF_FIELD)
    secret = dashboard_of(request).secret
    if not security.csrf_ok(secret, request.cookies.get(security.SESSION_COOKIE), _text(offered)):
        return JSON({"error": "missing or wrong CSRF token: reload the page"}, 403)
    return None


def _command(action: str, ref: str, form: FormData) -> Command:
    """The operation a button asks for; ValueError for an unknown one or a bad field."""
    if action == "cancel":
        discard = form.get("discard") in ("on", "true", "1")
        return lambda conn, now: controls.cancel(conn, ref, now=now, discard=discard)
    if action == "retry":
        chosen = retry_choice(",".join(_text(v) or "" for v in form.getlist("status")))
        return lambda conn, now: retry(
            conn, ref, now=now, statuses=chosen.statuses, invalid=chosen.invalid,
            disagree=chosen.disagree,
        )  # fmt: skip
    if action == "resume":
        cap = _max_cost(_text(form.get("max_cost")))
        return lambda conn, _now: controls.resume(conn, ref, max_cost=cap)
    raise ValueError(f"no such action {action!r}")


def _max_cost(text: str | None) -> Decimal | None:
    """The resume form's new cost limit: empty for none, else a positive amount."""
    if not text or not text.strip():
        return None
    try:
        cap = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"a cost limit is an amount, not {text[:40]!r}") from None
    if not cap.is_finite() or cap <= 0:
        raise ValueError("a cost limit must be more than 0")
    return cap


def _run(request: Request, command: Command) -> CommandResult:
    """The command in one transaction, as the CLI runs it; the batch's kept figures are
    dropped, so the page shows what the command did at once."""
    dashboard = dashboard_of(request)
    with dashboard.engine.begin() as conn:
        batch_id = reads.resolve_batch(conn, request.path_params["batch"]).id
        result = command(conn, db_now(conn))
    dashboard.cache.forget(batch_id)
    return result


def _text(value: Any) -> str | None:
    """A form value as text (an uploaded file counts as nothing)."""
    return value if isinstance(value, str) else None


def export(request: Request) -> Response:
    """The batch's results as a download, streamed from the database as they are written."""
    fmt = request.path_params["format"]
    if fmt not in EXPORT_TYPES:
        return JSON({"error": "export as export.jsonl or export.csv"}, status_code=404)
    with reading(request) as conn:
        row = path_batch(conn, request)
    engine = dashboard_of(request).engine

    def write_all(out: IO[bytes]) -> None:
        with engine.connect() as conn:
            export_batch(conn, row.id, out, fmt)

    headers = {"Content-Disposition": _attachment(row.name, fmt)}
    if request.method == "HEAD":  # what it would be, without running the export
        return Response(media_type=EXPORT_TYPES[fmt], headers=headers)
    return StreamingResponse(
        relayed(Download(write_all)), media_type=EXPORT_TYPES[fmt], headers=headers
    )


def report(request: Request) -> Response:
    """The batch's HTML report (``chatbatch report``'s file) as a download."""
    with reading(request) as conn, read_snapshot(conn):
        row = path_batch(conn, request)
        data = collect(conn, row, prices=prices_for(request, row), now=db_now(conn))
    return HTMLResponse(
        render_report(data), headers={"Content-Disposition": _attachment(row.name, "html")}
    )


def _attachment(stem: str, suffix: str) -> str:
    """A Content-Disposition naming a download safely (a batch name is user text)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:120] or "batch"
    return f'attachment; filename="{safe}.{suffix}"'


ROUTES = [
    Route("/batches/{batch}/{action:str}", control, methods=["POST"]),
    Route("/batches/{batch}/export.{format:str}", export),
    Route("/batches/{batch}/report.html", report),
]
