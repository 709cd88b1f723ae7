"""POST a JSON body to a webhook: a few attempts within one deadline, never raising.

Network errors and 5xx answers are tried again; a 4xx is final. All attempts together get one
deadline, so a receiver that answers a byte at a time cannot hold the caller up. What went
wrong is described without the URL (webhook URLs often carry a token).
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

TIMEOUT_SECONDS = 10.0
ATTEMPTS = 3
DEADLINE_SECONDS = 30.0  # for all attempts together


def post_json(url: str, body: dict[str, Any], *, deadline: float = DEADLINE_SECONDS) -> str | None:
    """POST ``body`` to ``url``; None when the receiver accepted it (2xx), else what went wrong
    (an exception's type name or ``HTTP 503``, never the URL)."""
    outcome: list[str | None] = []
    sender = threading.Thread(
        target=lambda: outcome.append(_problem_posting(url, body)), name="webhook", daemon=True
    )
    sender.start()
    sender.join(deadline)  # a daemon thread still stuck in a read does not keep the process up
    if sender.is_alive() or not outcome:
        return f"no answer within {deadline:g} s, gave up"
    return outcome[0]


def redacted(url: str) -> str:
    """``url`` without credentials, query or fragment (webhook URLs often carry a token)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the webhook URL"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _problem_posting(url: str, body: dict[str, Any]) -> str | None:
    """What went wrong posting ``body`` (None when accepted): any exception becomes its type's
    name, never a traceback from the thread nor a message that could repeat the URL's token."""
    try:
        return _post_with_retries(url, orjson.dumps(body))
    except Exception as exc:  # a notification must never fail its sender
        return type(exc).__name__


def _post_with_retries(url: str, payload: bytes) -> str | None:
    """POST ``payload``, again after a network error or a 5xx; the last problem, None on 2xx."""
    headers = {"content-type": "application/json", "user-agent": "chatbatch"}
    problem = "not sent"
    with httpx.Client(timeout=TIMEOUT_SECONDS) as client:
        for _ in range(ATTEMPTS):
            try:
                answer = client.post(url, content=payload, headers=headers)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
                continue
            if answer.is_success:
                return None
            problem = f"HTTP {answer.status_code}"
            if answer.status_code < 500:
                break
    return problem
