"""The dashboard's read API, which its pages use and scripts may too (README "Dashboard"):

* ``GET /api/batches?status=&name=&limit=``: status objects (``status --json``'s) newest first,
  each with ``progress`` (finished, remaining, rate_per_second, eta_seconds).
* ``GET /api/batches/{batch}``: one status object with ``progress``, ``errors`` (by code, with
  examples), ``recent_errors`` and ``workers`` (those holding its requests now).
* ``GET /api/batches/{batch}/requests?after=&limit=&status=&q=``: a page of its requests in
  line order; ``next_after`` is the ``after`` of the next page (keyset: as fast at row 10⁶).
* ``GET /api/requests/{id}``: one request in full (``show --json``'s object).
* ``GET /api/workers``: the workers heard from in the last day (``workers --json``).

Errors are ``{"error": "..."}`` with 400 (bad parameter) or 404 (no such batch or request)."""

from __future__ import annotations

from datetime import timedelta
from functools import wraps
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatbatch.errors import NotFoundError
from chatbatch.reporting.report_data import error_groups, recent_errors
from chatbatch.reporting.request_detail import request_detail, request_key
from chatbatch.reporting.request_table import PageQuery, request_page
from chatbatch.rules.states import BatchStatus
from chatbatch.store import liveness, reads
from chatbatch.store.db import db_now
from web.context import (
    JSON,
    as_plain,
    batch_state,
    dashboard_of,
    is_active,
    live_status,
    path_batch,
    prices_for,
    reading,
)

DEFAULT_BATCHES = 50
MAX_BATCHES = 500
WORKERS_SINCE = timedelta(days=1)
MAX_ID = 2**62  # beyond any line number or id, within every database's integers


def api_errors(endpoint: Any) -> Any:
    """Our errors as JSON: 404 for what does not exist, 400 for a bad parameter."""

    @wraps(endpoint)
    def answer(request: Request) -> Response:
        try:
            result: Response = endpoint(request)
        except NotFoundError as exc:
            return JSON({"error": str(exc)}, status_code=404)
        except ValueError as exc:
            return JSON({"error": str(exc)}, status_code=400)
        return result

    return answer


@api_errors
def batches(request: Request) -> Response:
    """Status objects of the newest batches, filtered by status and a part of the name."""
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status not in BatchStatus._value2member_map_:
        raise ValueError(f"unknown batch status {status!r}")
    limit = _int(params.get("limit"), DEFAULT_BATCHES, "limit", 1, MAX_BATCHES)
    with reading(request) as conn:
        rows = reads.list_batches(
            conn, status=status, name_part=params.get("name") or None, limit=limit
        )
        return JSON([live_status(conn, request, row) for row in rows])


@api_errors
def batch(request: Request) -> Response:
    """One batch: its status object, errors and the workers holding its requests."""
    return JSON(batch_view(request))


def batch_view(request: Request) -> dict[str, Any]:
    """What ``GET /api/batches/{batch}`` answers (the batch page starts from it too)."""
    heartbeat = dashboard_of(request).settings.heartbeat_seconds
    with reading(request) as conn:
        row = path_batch(conn, request)
        view = live_status(conn, request, row)
        view["errors"], view["recent_errors"] = dashboard_of(request).cache.get(
            ("errors", row.id),
            batch_state(row),
            is_active(row),
            lambda: (as_plain(error_groups(conn, row.id)), as_plain(recent_errors(conn, row.id))),
        )
        holders = liveness.batch_holders(
            conn, row.id, now=db_now(conn), heartbeat_seconds=heartbeat
        )
        view["workers"] = [holder.as_json() for holder in holders]
    return view


@api_errors
def batch_requests(request: Request) -> Response:
    """One page of a batch's requests."""
    params = request.query_params
    query = PageQuery(
        after=_int(params.get("after"), 0, "after", 0, MAX_ID),
        limit=_int(params.get("limit"), 50, "limit", 1, None),
        status=params.get("status") or None,
        search=params.get("q") or None,
    )
    with reading(request) as conn:
        row = path_batch(conn, request)
        return JSON(request_page(conn, row.id, query, prices=prices_for(request, row)))


@api_errors
def one_request(request: Request) -> Response:
    """One request in full, by its id."""
    return JSON(request_view(request))


def request_view(request: Request) -> dict[str, Any]:
    """What ``GET /api/requests/{id}`` answers (the request page shows the same)."""
    request_id: int = request.path_params["request"]
    if request_id > MAX_ID:
        raise NotFoundError(f"no request with id {request_id}")
    with reading(request) as conn:
        batch_id, custom_id = request_key(conn, request_id)
        row = reads.resolve_batch(conn, batch_id)
        detail = request_detail(conn, row, custom_id, prices=prices_for(request, row))
    detail["id"] = request_id
    return detail


@api_errors
def workers(request: Request) -> Response:
    """The workers live now or heard from in the last day."""
    heartbeat = dashboard_of(request).settings.heartbeat_seconds
    with reading(request) as conn:
        now = db_now(conn)
        rows = liveness.list_workers(
            conn, now=now, heartbeat_seconds=heartbeat, since=now - WORKERS_SINCE
        )
    return JSON([row.as_json() for row in rows])


def _int(text: str | None, default: int, name: str, low: int, high: int | None) -> int:
    """A whole-number parameter within [low, high]; ValueError naming it otherwise."""
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text[:40]!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {bound}")
    return value


ROUTES = [
    Route("/api/batches", batches),
    Route("/api/batches/{batch}", batch),
    Route("/api/batches/{batch}/requests", batch_requests),
    Route("/api/requests/{request:int}", one_request),
    Route("/api/workers", workers),
]
