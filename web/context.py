"""What the dashboard's endpoints share: the dashboard of a request, a read-only connection,
the batch a path names, and the live status object (``status --json``'s, plus throughput)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, Row
from starlette.requests import Request
from starlette.responses import Response

from chatbatch.errors import NotFoundError
from chatbatch.reporting.summary import batch_prices, status_object
from chatbatch.reporting.watching import ThroughputWindow, eta_seconds
from chatbatch.rules.pricing import PriceTable
from chatbatch.rules.states import TERMINAL_STATUSES, BatchStatus
from chatbatch.store import reads

if TYPE_CHECKING:
    from web.app import Dashboard


class JSON(Response):
    """A JSON answer encoded by orjson (dataclasses, datetimes and all)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def dashboard_of(request: Request) -> Dashboard:
    """The dashboard this request reached."""
    found: Dashboard = request.app.state.dashboard
    return found


@contextmanager
def reading(request: Request) -> Iterator[Connection]:
    """A connection for one request's reads, returned to the pool afterwards."""
    with dashboard_of(request).engine.connect() as conn:
        yield conn


def path_batch(conn: Connection, request: Request) -> Row[Any]:
    """The batch the path's ``{batch}`` names, by id or name (NotFoundError: none)."""
    ref = request.path_params["batch"]
    if "\x00" in ref:  # PostgreSQL refuses NUL in text: no batch has it
        raise NotFoundError(f"no batch with id or name {ref!r}")
    return reads.resolve_batch(conn, ref)


def prices_for(request: Request, batch: Row[Any]) -> PriceTable | None:
    """``serve --prices``, else the table stored with the batch."""
    return batch_prices(batch, dashboard_of(request).prices)


def live_status(conn: Connection, request: Request, batch: Row[Any]) -> dict[str, Any]:
    """The batch's status object with ``progress``: finished, remaining, the rate over the
    last seconds this server saw (``watch``'s window) and the ETA it implies. Kept a while
    between requests (``web.cache``): a copy, free to add to."""
    dashboard = dashboard_of(request)
    summary = dashboard.cache.get(
        ("status", batch.id),
        batch_state(batch),
        is_active(batch),
        lambda: _status_with_progress(conn, request, batch),
    )
    return dict(summary)


def batch_state(batch: Row[Any]) -> tuple[Any, ...]:
    """What changes when a batch's figures can change at once: a button or a sweep moved it."""
    return (batch.status, batch.pause_reason, batch.finished_at, batch.archived_at, batch.total)


def is_active(batch: Row[Any]) -> bool:
    """Whether the batch's figures may move by themselves: it is worked, or paused (its
    submitted requests are still fetched)."""
    return batch.status in (BatchStatus.RUNNING, BatchStatus.CANCELLING, BatchStatus.PAUSED)


def _status_with_progress(conn: Connection, request: Request, batch: Row[Any]) -> dict[str, Any]:
    dashboard = dashboard_of(request)
    read_at = time.monotonic()  # the rate's sample time: when the counts were read
    summary: dict[str, Any] = dict(
        status_object(conn, batch, config=dashboard.settings, prices=prices_for(request, batch))
    )
    finished = sum(summary["counts"][s] for s in TERMINAL_STATUSES)
    with dashboard.windows_lock:
        window = dashboard.windows.setdefault(batch.id, ThroughputWindow())
        window.add(read_at, finished)
        rate = window.rate()
    remaining = max(summary["total"] - finished, 0)
    working = batch.status in (BatchStatus.RUNNING, BatchStatus.CANCELLING)
    summary["progress"] = {
        "finished": finished,
        "remaining": remaining,
        "rate_per_second": rate if working else None,
        "eta_seconds": eta_seconds(remaining, rate) if working else None,
    }
    return summary


def as_plain(value: Any) -> Any:
    """A dataclass (or list of them) as plain dicts for JSON."""
    if isinstance(value, list):
        return [as_plain(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value
