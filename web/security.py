"""Who may use the dashboard, and proof that a POST came from its own pages.

* Bound to loopback without a token, anyone on this machine may use it, but only through a
  loopback Host header (a web page elsewhere cannot reach it by rebinding a DNS name).
* With ``CHATBATCH_DASHBOARD_TOKEN`` every request needs the token: ``Authorization: Bearer``
  for scripts, or the login form's HttpOnly, SameSite=Strict cookie (a digest of the token,
  never the token itself) for a browser.
* Every POST carries a CSRF token: an HMAC of the browser's session cookie under a secret of
  this server process, so another site can neither read nor forge it.

Pure functions over strings; ``web.app`` applies them to requests."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
SESSION_COOKIE = "chatbatch_session"
AUTH_COOKIE = "chatbatch_auth"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """Whether a bind address or Host header names this machine only (127.0.0.0/8, ::1,
    localhost); a Host header's port is ignored."""
    name = _host_name(host)
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """``host`` without its port and IPv6 brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def new_secret() -> bytes:
    """A fresh secret for one server process (CSRF tokens die with the process)."""
    return secrets.token_bytes(32)


def new_session() -> str:
    """A fresh session id for a browser's session cookie."""
    return secrets.token_urlsafe(24)


def csrf_token(secret: bytes, session: str) -> str:
    """The CSRF token of ``session``: only this process can make it."""
    return hmac.new(secret, b"csrf:" + session.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, session: str | None, offered: str | None) -> bool:
    """Whether a POST's ``offered`` token belongs to its session cookie."""
    if not session or not offered:
        return False
    return hmac.compare_digest(csrf_token(secret, session).encode(), offered.encode())


def auth_cookie_value(token: str) -> str:
    """What the login cookie holds: a digest of the token (a stolen cookie is not the token,
    and it stays valid across restarts until the token changes)."""
    return hashlib.sha256(b"chatbatch-dashboard:" + token.encode()).hexdigest()


def authorised(token: str, *, bearer: str | None, cookie: str | None) -> bool:
    """Whether a request proves it knows ``token``: as a bearer token or the login cookie."""
    if bearer is not None and hmac.compare_digest(bearer.encode(), token.encode()):
        return True
    return cookie is not None and hmac.compare_digest(
        cookie.encode(), auth_cookie_value(token).encode()
    )


def bearer_of(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header (None for none or another scheme)."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
