"""The only module that speaks HTTP to the provider: one long-lived httpx client per process."""

from __future__ import annotations

import dataclasses
import logging
from urllib.parse import quote

import httpx
import orjson

from chatbatch.outcomes import Outcome
from chatbatch.settings import Settings
from worker.classify import classify_exception, classify_poll, classify_submit

logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)


class Provider:
    """Submits background chat completions and polls their results; never raises on HTTP."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_connections: int = 16,
    ) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "chatbatch/0.1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._api_key = api_key
        self._client = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=read_timeout),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=30,
            ),
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Provider:
        return cls(
            base_url=settings.api_base,
            api_key=settings.api_key_value(),
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_connections=settings.concurrency,
        )

    def submit(self, body: str) -> Outcome:
        """POST one request in background mode."""
        payload = orjson.loads(body)
        payload["background"] = True
        try:
            response = self._client.post("chat/completions", content=orjson.dumps(payload))
        except httpx.HTTPError as exc:
            return self._redacted(classify_exception(exc, is_post=True))
        return self._redacted(
            classify_submit(response.status_code, response.headers, response.text)
        )

    def poll(self, remote_id: str) -> Outcome:
        """GET the status (and, when done, the result) of a background task."""
        try:
            response = self._client.get(f"chat/{quote(remote_id, safe='')}")
        except httpx.HTTPError as exc:
            return self._redacted(classify_exception(exc, is_post=False))
        return self._redacted(classify_poll(response.status_code, response.headers, response.text))

    def close(self) -> None:
        self._client.close()

    def _redacted(self, outcome: Outcome) -> Outcome:
        """Scrub the API key from any message a provider might echo it in."""
        message = getattr(outcome, "message", None)
        if self._api_key and isinstance(message, str) and self._api_key in message:
            scrubbed = message.replace(self._api_key, "[redacted]")
            return dataclasses.replace(outcome, message=scrubbed)  # type: ignore[arg-type]
        return outcome
