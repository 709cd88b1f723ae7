"""The dashboard's HTML pages: every batch, one batch (the report's sections, rendered by the
report's own templates, plus live figures, workers, requests and buttons), one request, and
the login form. Pages are autoescaped Jinja2; their live parts are filled by
``static/dashboard.js`` from the read API, as text, never as HTML."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from jinja2 import Environment, PackageLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from chatbatch.operations.retry import RETRY_CHOICES
from chatbatch.reporting.report import format_count, report_context, report_environment
from chatbatch.reporting.report_data import collect
from chatbatch.rules.states import BatchStatus, RequestStatus
from chatbatch.store.db import db_now
from chatbatch.store.dialect import read_snapshot
from web import security
from web.api import request_view
from web.context import (
    JSON,
    batch_state,
    dashboard_of,
    is_active,
    path_batch,
    prices_for,
    reading,
)


@functools.cache
def environment() -> Environment:
    """The pages' templates first, then the report's (whose sections the batch page includes)."""
    env = report_environment(PackageLoader("web", "templates"))
    env.filters["pretty"] = lambda value: orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    env.globals["fmt_int"] = format_count
    env.filters["when"] = lambda iso: iso[:19].replace("T", " ") if iso else ""
    return env


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """A page, with what every page needs: the CSRF token, read-only mode, the broker."""
    dashboard = dashboard_of(request)
    common = {
        "csrf": security.csrf_token(dashboard.secret, request.state.session),
        "read_only": dashboard.read_only,
        "broker": dashboard.broker,
    }
    html = environment().get_template(template).render(**common, **context)
    return HTMLResponse(html, status_code=status_code)


def batches_page(request: Request) -> Response:
    """Every batch, newest first, filled in and kept live by the script."""
    return render(request, "batches.html.j2", page="batches", statuses=list(BatchStatus))


def batch_page(request: Request) -> Response:
    """One batch: live figures and buttons above the report's sections, then its requests."""
    row, context = _report(request)
    return render(
        request,
        "batch.html.j2",
        page="batch",
        **context,
        request_statuses=list(RequestStatus),
        retry_choices=[c for c in RETRY_CHOICES if c != "disagree" or row.gold_column],
    )


def batch_sections(request: Request) -> Response:
    """The report's sections alone, which the batch page swaps in while the batch runs."""
    _row, context = _report(request)
    return render(request, "report_sections.html.j2", **context)


def _report(request: Request) -> tuple[Any, dict[str, Any]]:
    """The batch the path names and its report's context, every figure from one snapshot."""
    with reading(request) as conn:  # returned before the report takes its own connection
        row = path_batch(conn, request)
    context = dashboard_of(request).cache.get(
        ("report", row.id), batch_state(row), is_active(row), lambda: _report_context(request, row)
    )
    return row, context


def _report_context(request: Request, row: Any) -> dict[str, Any]:
    """The report's context, every figure from one snapshot."""
    with reading(request) as conn, read_snapshot(conn):
        data = collect(conn, row, prices=prices_for(request, row), now=db_now(conn))
    return report_context(data)


def request_page(request: Request) -> Response:
    """One request in full: as sent, every outcome, the answer, usage, verdicts."""
    return render(request, "request.html.j2", page="request", detail=request_view(request))


def login_page(request: Request) -> Response:
    """The login form (only with a token configured; without one there is nothing to log in)."""
    return render(request, "login.html.j2", page="login", refused=False)


async def login(request: Request) -> Response:
    """Check the token typed in; set the HttpOnly, SameSite=Strict login cookie."""
    dashboard = dashboard_of(request)
    form = await request.form()
    offered = form.get("token")
    if dashboard.token is None:
        return RedirectResponse("/", status_code=303)
    if not isinstance(offered, str) or not security.authorised(
        dashboard.token, bearer=offered, cookie=None
    ):
        return render(request, "login.html.j2", status_code=401, page="login", refused=True)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        security.AUTH_COOKIE,
        security.auth_cookie_value(dashboard.token),
        httponly=True,
        samesite="strict",
    )
    return response


def not_found(request: Request, exc: Exception) -> Response:
    """A batch or request that does not exist: JSON for the API, a page otherwise."""
    if request.url.path.startswith("/api/"):
        return JSON({"error": str(exc)}, status_code=404)
    return render(request, "missing.html.j2", status_code=404, page="missing", message=str(exc))


ROUTES = [
    Route("/", batches_page),
    Route("/batches/{batch}", batch_page),
    Route("/batches/{batch}/sections", batch_sections),
    Route("/requests/{request:int}", request_page),
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
]
