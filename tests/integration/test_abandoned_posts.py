"""A POST the worker gave up on is abandoned for real: bytes not yet delivered when it timed out
never reach the provider later (a host cut off from the network used to deliver them when the
link came back, after another host had resubmitted the request)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from chatbatch.rules.outcomes import Retryable
from worker.provider import Provider

BODY_BYTES = 8 * 1024 * 1024  # far more than the socket buffers hold


@dataclass
class StalledServer:
    """Accepts one connection and reads nothing until ``drain()``: the client's bytes pile up
    unsent, as on a cut link."""

    port: int
    start_reading: threading.Event = field(default_factory=threading.Event)
    received: int = 0
    reset: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def drain(self, timeout: float = 20) -> None:
        """Read whatever still arrives, until the end of the stream or a reset."""
        self.start_reading.set()
        assert self.done.wait(timeout), "the server never saw the connection end"


@contextmanager
def stalled_server() -> Iterator[StalledServer]:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    server = StalledServer(listener.getsockname()[1])

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            server.start_reading.wait()
            conn.settimeout(10)
            try:
                while chunk := conn.recv(1 << 16):
                    server.received += len(chunk)
            except ConnectionResetError:
                server.reset = True
            except TimeoutError:
                pass
        server.done.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.start_reading.set()
        listener.close()
        thread.join(timeout=15)


@pytest.mark.filterwarnings("ignore:Sending a large body:ResourceWarning")  # aiohttp's advice
@pytest.mark.parametrize(
    "size",
    [
        pytest.param(256 * 1024, id="queued in the kernel"),
        pytest.param(BODY_BYTES, id="queued in the kernel and in asyncio"),
    ],
)
def test_a_post_that_timed_out_is_reset_and_its_unsent_bytes_never_arrive(size: int) -> None:
    body = '{"model": "m", "pad": "' + "x" * size + '"}'
    with stalled_server() as server:
        client = Provider(
            base_url=f"http://127.0.0.1:{server.port}/api/v1",
            api_key="sk-test-key",
            connect_timeout=1,
            read_timeout=1,
        )
        try:
            outcome = client.submit(body)
        finally:
            client.close()
        server.drain()
    assert isinstance(outcome, Retryable), outcome
    assert server.reset, "the connection was closed in order, its queued bytes delivered"
    assert server.received < len(body) // 2, server.received


def test_a_plainly_closed_socket_does_deliver_its_queued_bytes_later() -> None:
    """The control: without the reset, a closed socket's kernel keeps sending what it had
    queued, and the stalled peer gets all of it once it reads (the bug the test above guards
    against, shown on the same server)."""
    payload = b"x" * BODY_BYTES
    with stalled_server() as server:
        client = socket.create_connection(("127.0.0.1", server.port))
        client.setblocking(False)
        sent = 0
        try:
            while sent < len(payload):
                sent += client.send(payload[sent : sent + (1 << 16)])
        except BlockingIOError:
            pass  # the buffers are full: the rest is never written
        client.close()
        server.drain()
    assert not server.reset and server.received == sent > 0
