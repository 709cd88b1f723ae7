"""The only module that speaks HTTP to the provider.

One long-lived ``httpx.AsyncClient`` per process on one event loop (``BackgroundLoop``), over
an aiohttp-backed transport: measured here, httpx's own async pool cost 3.1 ms of CPU per
request pair and its sync pool 1.1 ms (16 threads on one lock), against 0.77 ms through aiohttp
(README, "Performance"). The httpx API, timeouts and exception types stay the same.

Answers are untrusted: a body is read up to ``max_response_bytes`` (more is a
``bad_response``, never a process swollen by one answer), each call has one overall deadline
(a body trickled a byte at a time cannot outlive the lease), and every text is scrubbed of the
key before anything else sees it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from urllib.parse import quote

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from chatbatch.redaction import Redactor
from chatbatch.rules.outcomes import NotSent, Outcome, Retryable
from worker.classify import RETRY_AFTER_CAP, bad_response, classify_exception
from worker.http_loop import BackgroundLoop
from worker.protocols import Classifier, Protocol, protocol_for
from worker.sockets import AbandoningConnector

logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

KEEPALIVE_SECONDS = 30
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
READ_HEADERS = ("retry-after", "x-request-id")  # the only headers of an answer we look at
CLAIMED_TOO_LONG_AGO = "claimed too long ago to send: another worker may have taken it over"
# aiohttp errors that mean the connection was never made, so a POST cannot have been sent.
_CONNECT_FAILURES = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class Provider:
    """Submits chat completions in its protocol's way and polls what they left behind; never
    raises on HTTP."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_connections: int = 16,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        retry_cap: float = RETRY_AFTER_CAP,
        protocol: Protocol | None = None,
        sync_read_timeout: float = 600.0,
        poll_path: str | None = None,
        other_keys: Sequence[str] = (),
        send_window: float | None = None,
    ) -> None:
        """``sync_read_timeout`` replaces ``read_timeout`` for a POST that waits while the model
        generates (``protocol.waits_for_answer``); ``poll_path`` (``{id}`` in it) replaces the
        protocol's; ``other_keys`` (other providers') are scrubbed from answers too. A POST
        must connect within ``send_window`` and have its bytes acknowledged within it, or it
        is dropped (``start`` has it begin within it too): three windows fit in the time after
        which another worker may take its request over (``providers.send_window``)."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "chatbatch/0.1",
            "Accept-Encoding": "identity",  # a compressed answer could be a bomb past the cap
        }
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._redact = Redactor(api_key, *other_keys)
        self._max_connections = max_connections
        self._max_bytes = max_response_bytes
        self._retry_cap = retry_cap
        self._protocol = protocol or protocol_for("background")
        self._poll_path = poll_path or self._protocol.poll_path
        self._call_seconds = connect_timeout + 2 * read_timeout
        post_connect = min(connect_timeout, send_window or connect_timeout)
        self._post_timeout = httpx.Timeout(read_timeout, connect=post_connect, pool=read_timeout)
        self._post_seconds = self._call_seconds
        if self._protocol.waits_for_answer:  # generation happens inside the POST
            self._post_timeout = httpx.Timeout(sync_read_timeout, connect=post_connect)
            self._post_seconds = connect_timeout + sync_read_timeout + read_timeout
        self._loop = BackgroundLoop()

        def session() -> aiohttp.ClientSession:
            connector = AbandoningConnector(  # a POST given up on is never sent later
                unacked_seconds=send_window,
                limit=max_connections,
                keepalive_timeout=KEEPALIVE_SECONDS,
            )
            return aiohttp.ClientSession(connector=connector)

        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=read_timeout),
            transport=AiohttpTransport(client=session),
            follow_redirects=False,
        )
        self._slots: asyncio.Semaphore | None = None
        self._stopping = False  # set on the loop's thread by stop()
        self._waiting: set[asyncio.Task[object]] = set()  # calls waiting for a slot
        self._sending: set[asyncio.Task[object]] = set()  # calls in flight

    @property
    def waits_for_answers(self) -> bool:
        """Whether a POST stays open while the model generates (sync mode)."""
        return self._protocol.waits_for_answer

    def start(
        self,
        bodies: Sequence[str],
        remote_ids: Sequence[str],
        deliver: Callable[[int, Outcome], None],
        *,
        send_by: float | None = None,
    ) -> Future[None]:
        """POST every body and GET every task, all concurrently (at most ``max_connections``
        in flight across the process), calling ``deliver(index, outcome)`` on the loop's thread
        as each one lands: POSTs are indexed first, then GETs. A POST not begun by ``send_by``
        (``time.monotonic()``; its claim is too old to send safely) is ``NotSent``. The future
        is done when all have landed."""

        async def one(index: int, call: Awaitable[Outcome]) -> None:
            deliver(index, await call)

        async def everything() -> None:
            calls = [self._submit(body, send_by) for body in bodies]
            calls += [self._poll(remote_id) for remote_id in remote_ids]
            await asyncio.gather(*(one(i, call) for i, call in enumerate(calls)))

        return self._loop.submit(everything())

    def exchange(
        self, bodies: Sequence[str], remote_ids: Sequence[str]
    ) -> tuple[list[Outcome], list[Outcome]]:
        """``start`` and wait: the POSTs' outcomes and the GETs', each in call order."""
        landed: dict[int, Outcome] = {}
        self.start(bodies, remote_ids, landed.__setitem__).result()
        ordered = [landed[i] for i in range(len(bodies) + len(remote_ids))]
        return ordered[: len(bodies)], ordered[len(bodies) :]

    def submit(self, body: str) -> Outcome:
        """POST one request in the provider's protocol."""
        return self.exchange([body], [])[0][0]

    def poll(self, remote_id: str) -> Outcome:
        """GET the status (and, when done, the result) of one task a POST left behind."""
        return self.exchange([], [remote_id])[1][0]

    def models(self) -> object | None:
        """GeekAI's model listing (with each model's published limits); None if unavailable."""

        async def listing() -> object | None:
            async with self._in_flight():
                try:
                    response = await self._client.get("models")
                    response.raise_for_status()
                    return orjson.loads(response.content)
                except Exception:  # optional information: never worth failing for
                    return None

        return self._loop.run(listing())

    def close(self) -> None:
        self._loop.run(self._client.aclose())
        self._loop.close()

    async def _submit(self, body: str, send_by: float | None = None) -> Outcome:
        protocol = self._protocol
        content = orjson.dumps(protocol.prepare(orjson.loads(body)))
        request = self._client.build_request(
            "POST",
            protocol.submit_path,
            content=content,
            timeout=self._post_timeout,
        )
        exchange = Exchange(protocol.classify_submit, self._post_seconds, True, send_by)
        return await self._call(request, exchange)

    async def _poll(self, remote_id: str) -> Outcome:
        path = self._poll_path.replace("{id}", quote(remote_id, safe=""))
        request = self._client.build_request("GET", path)
        exchange = Exchange(self._protocol.classify_poll, self._call_seconds, False)
        return await self._call(request, exchange)

    def stop(self, grace: float) -> None:
        """Send nothing more (callable from any thread): calls not yet sent end ``NotSent`` at
        once; calls in flight get ``grace`` seconds to land, then are cut off (a POST cut off
        may have been accepted, and says so)."""

        def begin() -> None:
            self._stopping = True
            for task in list(self._waiting):
                task.cancel()
            asyncio.get_running_loop().call_later(grace, self._cut_off)

        self._loop.call_soon(begin)

    def _cut_off(self) -> None:
        for task in list(self._sending):
            task.cancel()

    async def _call(self, request: httpx.Request, exchange: Exchange) -> Outcome:
        """Send ``request`` once a connection slot is free, unless stopping: a call that never
        started is ``NotSent``, one cut off while in flight is possibly accepted."""
        task = asyncio.current_task()
        assert task is not None
        slots = self._in_flight()
        self._waiting.add(task)
        try:
            if self._stopping:
                return NotSent()
            await slots.acquire()
        except asyncio.CancelledError:
            return NotSent()
        finally:
            self._waiting.discard(task)
        try:
            if self._stopping:
                return NotSent()
            if exchange.send_by is not None and time.monotonic() > exchange.send_by:
                return NotSent(message=CLAIMED_TOO_LONG_AGO)
            self._sending.add(task)
            return await self._exchange(request, exchange)
        except asyncio.CancelledError:
            message = "stopped while in flight"
            return Retryable("interrupted", message, maybe_accepted=exchange.is_post)
        finally:
            self._sending.discard(task)
            slots.release()

    async def _exchange(self, request: httpx.Request, exchange: Exchange) -> Outcome:
        """Send ``request`` and classify its answer, read within the size cap and the call's
        deadline; transport failures are outcomes too."""
        is_post = exchange.is_post
        try:
            async with asyncio.timeout(exchange.deadline):
                response = await self._client.send(request, stream=True)
                try:
                    raw = await self._read_capped(response)
                finally:
                    await response.aclose()
        except Exception as exc:
            failure = _transport_failure(exc, is_post=is_post)
            return dataclasses.replace(failure, message=self._redact(failure.message))
        if raw is None:
            message = f"answer larger than {self._max_bytes} bytes, or not decodable"
            return bad_response(message, http_status=response.status_code, maybe_accepted=is_post)
        text = self._redact(raw.decode("utf-8", errors="replace"))
        headers = {
            name: self._redact(value)
            for name in READ_HEADERS
            if (value := response.headers.get(name)) is not None
        }
        status, cap = response.status_code, self._retry_cap
        return exchange.classify(status, headers, text, retry_cap=cap)

    async def _read_capped(self, response: httpx.Response) -> bytes | None:
        """The body, or None when it is larger than the cap (declared or as it arrives) or in
        an encoding we did not ask for and cannot decode within the cap."""
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > self._max_bytes:
                return None
            chunks.append(chunk)
        encoding = response.headers.get("content-encoding", "identity")
        return decoded_body(b"".join(chunks), encoding, self._max_bytes)

    def _in_flight(self) -> asyncio.Semaphore:
        if self._slots is None:  # created on the loop's thread, where it is used
            self._slots = asyncio.Semaphore(self._max_connections)
        return self._slots


@dataclasses.dataclass(frozen=True)
class Exchange:
    """How one call's answer is read: its classifier, its overall deadline in seconds, whether
    it is a POST (one cut off may have been accepted), and when it must have begun, if ever."""

    classify: Classifier
    deadline: float
    is_post: bool
    send_by: float | None = None


def decoded_body(raw: bytes, encoding: str, limit: int) -> bytes | None:
    """``raw`` undone from its Content-Encoding, never growing past ``limit`` bytes (a small
    gzip can unpack to gigabytes); None when it would, or the encoding is unknown."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return None
    # gzip, or deflate with its zlib header (detected); deflate without one is raw.
    raw_deflate = encoding == "deflate" and raw[:1] != b"x"
    try:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS if raw_deflate else zlib.MAX_WBITS | 32)
        body = inflater.decompress(raw, limit + 1)
    except zlib.error:
        return None
    return body if len(body) <= limit else None


def _transport_failure(exc: Exception, *, is_post: bool) -> Retryable:
    """Classify a failed call. The aiohttp transport maps *every* broken connection, including a
    server hanging up after reading our POST, to ``ConnectTimeout`` ("never sent"); only a failed
    connect really is one, so anything else is treated as possibly sent. The call's overall
    deadline passing is a read timeout."""
    if isinstance(exc, TimeoutError):
        exc = httpx.ReadTimeout(f"no complete answer within the call's deadline: {exc}")
    if isinstance(exc, httpx.ConnectTimeout) and not isinstance(exc.__cause__, _CONNECT_FAILURES):
        exc = httpx.RemoteProtocolError(f"{type(exc.__cause__).__name__}: {exc}")
    if not isinstance(exc, httpx.HTTPError):
        exc = httpx.TransportError(f"{type(exc).__name__}: {exc}")
    return classify_exception(exc, is_post=is_post)
