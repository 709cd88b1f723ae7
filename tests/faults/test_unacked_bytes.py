"""Bytes a provider never acknowledged are dropped, not delivered when a partition heals.

A POST's bytes written just as a host was cut off sat in its kernel, retransmitted with backoff,
and reached the provider after the heal: after another host, which had taken the request over,
had sent it too. The worker's sockets (``worker.sockets``) end a connection whose bytes stay
unacknowledged for ``unacked_seconds``; a plain socket, beside it, shows the test can fail.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from netns import Host, Hosts

UNACKED_SECONDS = 2.0
CUT_SECONDS = 4.0  # longer than UNACKED_SECONDS
ETIMEDOUT = 110

# Runs inside the host: connect, wait for the cut, write a POST, report how the socket ended.
CLIENT = """
import socket, sys
from worker.sockets import abandonable_socket
host, port, kind, unacked = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
info = (socket.AF_INET, socket.SOCK_STREAM, 0, "", (host, port))
sock = abandonable_socket(info, unacked_seconds=unacked) if kind == "ours" else socket.socket()
sock.connect((host, port))
print("connected", flush=True)
sys.stdin.readline()
sock.sendall(b"POST /v1/chat/completions HTTP/1.1\\r\\nContent-Length: 2\\r\\n\\r\\n{}")
print("sent", flush=True)
sock.settimeout(60)
try:
    sock.recv(1)
    print("answered", flush=True)
except OSError as exc:
    print(f"error {exc.errno}", flush=True)
sys.stdin.readline()
"""


@dataclass
class Listener:
    """Accepts one connection on the root side of a host's link and notes what arrives."""

    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    arrived_at: float | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(60)
            try:
                while chunk := conn.recv(4096):
                    self.received += chunk
                    self.arrived_at = self.arrived_at or time.monotonic()
            except OSError:
                pass


@contextmanager
def listening(address: str) -> Iterator[Listener]:
    with socket.socket() as sock:
        sock.bind((address, 0))
        sock.listen(1)
        listener = Listener(sock)
        threading.Thread(target=listener.serve, daemon=True).start()
        yield listener


@contextmanager
def client(host: Host, listener: Listener, kind: str) -> Iterator[subprocess.Popen[str]]:
    args = [host.root_address, str(listener.port), kind, str(UNACKED_SECONDS)]
    proc = subprocess.Popen(
        host.command(sys.executable, "-c", CLIENT, *args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.communicate()  # reaps it and closes its pipes


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def _tell(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()


@pytest.mark.hosts(1)
def test_bytes_unacknowledged_through_a_partition_never_arrive_after_the_heal(
    hosts: Hosts,
) -> None:
    (host,) = hosts.hosts
    with (
        listening(host.root_address) as ours_at,
        listening(host.root_address) as plain_at,
        client(host, ours_at, "ours") as ours,
        client(host, plain_at, "plain") as plain,
    ):
        assert (_line(ours), _line(plain)) == ("connected", "connected")
        hosts.partition(host)
        for proc in (ours, plain):
            _tell(proc)
        assert (_line(ours), _line(plain)) == ("sent", "sent")
        time.sleep(CUT_SECONDS)
        hosts.heal(host)
        healed_at = time.monotonic()
        # Both wrote at the same moment, so their retransmissions are due together: by the time
        # the plain socket's bytes arrive, ours would have too.
        deadline = healed_at + 30
        while plain_at.arrived_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.0)
        ended = _line(ours)  # ours gave up during the cut
    assert plain_at.arrived_at is not None, "the control never delivered its bytes"
    print(
        f"\nplain socket's POST arrived {plain_at.arrived_at - healed_at:.1f} s after the heal; "
        f"ours: {len(ours_at.received)} bytes, ended with {ended!r}"
    )
    assert plain_at.received.startswith(b"POST ")
    assert ours_at.received == b"", "bytes given up on reached the server after the heal"
    assert ended == f"error {ETIMEDOUT}"
