"""The provider's TCP connections: one given up on is abandoned for real, and a dead peer is
noticed.

A host cut off from the network delivered POSTs it had timed out on a minute later, when the
link came back, after another host had resubmitted them (double billing). Two buffers held
those bytes. The kernel's: a socket closed normally keeps retransmitting what it queued, so
sockets here set ``SO_LINGER`` 0 (a close resets the connection and drops unsent bytes). And
asyncio's: a transport closed normally writes out its buffer first, so the connector here
aborts a connection that still has bytes to write instead of closing it. A POST given up on
is then either whole at the provider already or never. Keepalives end connections to a peer
that vanished.

A POST still waiting for its answer is not given up on, yet another host takes its request over
once its worker has been silent for a few heartbeats. So bytes the provider has not acknowledged
within ``unacked_seconds`` end the connection (``TCP_USER_TIMEOUT``, where the platform has it):
they are dropped, never delivered after a partition heals.
"""

from __future__ import annotations

import functools
import socket
import struct
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

KEEPALIVE_IDLE_SECONDS = 10
KEEPALIVE_INTERVAL_SECONDS = 5
KEEPALIVE_PROBES = 3
_NO_LINGER = struct.pack("ii", 1, 0)  # l_onoff 1, l_linger 0: close() resets, unsent bytes go

AddrInfo = tuple[int, int, int, str, tuple[object, ...]]


def abandonable_socket(
    addr_info: AddrInfo, *, unacked_seconds: float | None = None
) -> socket.socket:
    """A TCP socket for ``addr_info`` (family, type, proto, …) whose close drops unsent bytes,
    with keepalives, that ends itself when what it sent stays unacknowledged for
    ``unacked_seconds`` (aiohttp's ``socket_factory``)."""
    family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family=family, type=kind, proto=proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _NO_LINGER)
        keep_alive(sock)
        if unacked_seconds is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
            milliseconds = max(1, round(unacked_seconds * 1000))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, milliseconds)
    except OSError:
        sock.close()
        raise
    return sock


def keep_alive(sock: socket.socket) -> None:
    """Probe an idle connection after ``KEEPALIVE_IDLE_SECONDS`` and drop it after
    ``KEEPALIVE_PROBES`` unanswered probes (where the platform has the options)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in keepalive_options().items():
        sock.setsockopt(socket.IPPROTO_TCP, name, value)


def keepalive_options() -> dict[int, int]:
    """The TCP keepalive timings this platform lets us set, by socket option."""
    wanted = {
        "TCP_KEEPIDLE": KEEPALIVE_IDLE_SECONDS,
        "TCP_KEEPINTVL": KEEPALIVE_INTERVAL_SECONDS,
        "TCP_KEEPCNT": KEEPALIVE_PROBES,
    }
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


class AbandoningHandler(ResponseHandler):
    """aiohttp's connection protocol, except that closing a connection with bytes still to
    write aborts it: they are never sent later."""

    def close(self) -> None:
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size():
            self.abort()
        else:
            super().close()


class AbandoningConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` whose sockets reset on close and end when what they sent stays
    unacknowledged for ``unacked_seconds`` (``abandonable_socket``), and whose connections are
    abandoned, not flushed, when closed mid-write (``AbandoningHandler``;
    ``tests/integration/test_abandoned_posts.py`` and ``tests/faults/test_unacked_bytes.py``
    check them against the installed aiohttp and the kernel)."""

    def __init__(self, *, unacked_seconds: float | None = None, **options: Any) -> None:
        factory = functools.partial(abandonable_socket, unacked_seconds=unacked_seconds)
        super().__init__(socket_factory=factory, **options)
        self._factory = functools.partial(AbandoningHandler, loop=self._loop)  # type: ignore[assignment]
