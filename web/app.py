"""The dashboard as an ASGI app (Starlette): its settings, its routes, and the guard every
request passes (Host, token, security headers, session cookie). Endpoints are plain sync
functions, which Starlette runs in its thread pool: they read the database with SQLAlchemy
like every other front end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from chatbatch.errors import NotFoundError
from chatbatch.reporting.watching import ThroughputWindow
from chatbatch.rules.pricing import PriceTable
from chatbatch.settings import Settings
from web import actions, api, pages, security
from web.cache import FigureCache

STATIC = Path(__file__).parent / "static"
# Scripts only from this server (no inline script can run); the report's inline styles stay.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)
LOGIN_PATH, STATIC_PREFIX = "/login", "/static/"  # reachable before logging in


@dataclass
class Dashboard:
    """What every endpoint needs: the database, the settings, and how the server was started."""

    engine: Engine
    settings: Settings
    read_only: bool = False
    token: str | None = None
    prices: PriceTable | None = None  # --prices, else each batch's stored table
    secret: bytes = field(default_factory=security.new_secret)
    windows: dict[str, ThroughputWindow] = field(default_factory=dict)
    windows_lock: Lock = field(default_factory=Lock)
    cache: FigureCache = field(default_factory=FigureCache)

    @property
    def broker(self) -> bool:
        """Whether workers elsewhere take up what a button queues (else `process` must)."""
        return bool(self.settings.broker_url)


def create_app(dashboard: Dashboard) -> Starlette:
    """The dashboard's routes behind its guard."""
    app = Starlette(
        routes=[
            *pages.ROUTES,
            *api.ROUTES,
            *actions.ROUTES,
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=_guard)],
        exception_handlers={NotFoundError: pages.not_found},
    )
    app.state.dashboard = dashboard
    return app


async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Refuse foreign Host headers and unauthorised requests; give each browser a session
    cookie (the CSRF token's seed); add the security headers to every answer."""
    dashboard: Dashboard = request.app.state.dashboard
    refused = _refusal(request, dashboard)
    session = request.cookies.get(security.SESSION_COOKIE)
    request.state.session = session or security.new_session()
    response = refused or await call_next(request)
    if not session:
        response.set_cookie(
            security.SESSION_COOKIE, request.state.session, httponly=True, samesite="strict"
        )
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _cross_site_load(request: Request) -> bool:
    """Whether another site's page is loading this one as an image, script or fetch (which
    would run exports and reports on the user's behalf); following a link is fine."""
    headers = request.headers
    return (
        headers.get("sec-fetch-site") == "cross-site"
        and headers.get("sec-fetch-mode", "navigate") != "navigate"
    )


def _refusal(request: Request, dashboard: Dashboard) -> Response | None:
    """Why this request may not go on, as the answer to give; None when it may."""
    if _cross_site_load(request):
        return Response("another site may not load this dashboard's pages\n", status_code=403)
    if dashboard.token is None:
        if not security.is_loopback(request.headers.get("host", "")):
            return Response("this dashboard answers to localhost only\n", status_code=421)
        return None
    path = request.url.path
    if path == LOGIN_PATH or path.startswith(STATIC_PREFIX):
        return None
    if security.authorised(
        dashboard.token,
        bearer=security.bearer_of(request.headers.get("authorization")),
        cookie=request.cookies.get(security.AUTH_COOKIE),
    ):
        return None
    if path.startswith("/api/") or request.method != "GET":
        return JSONResponse({"error": "a token is needed (Authorization: Bearer)"}, 401)
    return RedirectResponse(LOGIN_PATH, status_code=303)
