"""Several hosts in one machine: Linux network namespaces joined to the root namespace by veth
pairs, a TCP forwarder of the test's own that lets them reach servers listening on 127.0.0.1,
and a partition (the host's link down) that leaves its processes alive but cut off.

Each host gets a /30 of its own in 10.231.K.0/24 (K picked free per run, under a lock): the
root side of its veth is ``.4i+1``, the namespace side ``.4i+2``. A namespace has no default
route, so nothing in it can reach anything but its peer address; the root namespace has a
blackhole route for the run's /24, so that while a link is down (and the kernel has removed its
connected route) what the forwarder still sends to the host is dropped, not routed out of the
machine. Names carry the pid of the test process (``cbp<pid>h<i>``), and leftovers of runs whose
process is gone are swept before a new run starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "cbp"
SUBNET_PREFIX = "10.231"
ROUTE_PROTO = "231"  # marks the run's blackhole route, so a sweep can find it
LOCK_PATH = Path("/tmp/chatbatch-netns.lock")
NAME = re.compile(rf"^{PREFIX}(\d+)[hrn](\d+)$")
IP_TIMEOUT = 20.0


class NetnsError(RuntimeError):
    """A namespace, link or route could not be set up."""


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they (probably) can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    return None


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; NetnsError with its output when it fails and ``check`` is set."""
    proc = subprocess.run(
        ["ip", *args],
        capture_output=True,
        text=True,
        timeout=IP_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list", check=False).splitlines() if line]


def _links() -> list[str]:
    names = []
    for line in ip("-o", "link", "show", check=False).splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def _kill_inside(namespace: str) -> None:
    """SIGKILL every process in ``namespace`` (only this kit starts processes there) and wait
    until they are gone, so that the namespace really goes with ``ip netns del``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [int(p) for p in ip("netns", "pids", namespace, check=False).split() if p.isdigit()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _remove_namespace(namespace: str) -> None:
    _kill_inside(namespace)
    ip("netns", "del", namespace, check=False)


def _our_blackholes() -> list[str]:
    """The blackhole routes runs of this kit added (``proto 231``), as prefixes."""
    routes = ip("-4", "route", "show", "proto", ROUTE_PROTO, check=False).splitlines()
    return [line.split()[1] for line in routes if line.startswith("blackhole ")]


def sweep_leftovers() -> list[str]:
    """Remove namespaces, links and blackhole routes of earlier runs whose process is gone
    (call with the lock held); returns what was removed."""
    removed = []
    for namespace in _namespaces():
        match = NAME.match(namespace)
        if match and not _pid_alive(int(match.group(1))):
            _remove_namespace(namespace)
            removed.append(f"netns {namespace}")
    for link in _links():
        match = NAME.match(link)
        if match and not _pid_alive(int(match.group(1))):
            ip("link", "del", link, check=False)
            removed.append(f"link {link}")
    addresses = ip("-4", "-o", "addr", "show", check=False)
    for prefix in _our_blackholes():
        third = prefix.split(".")[2]
        if f" {SUBNET_PREFIX}.{third}." not in addresses:  # no live run has a link there
            ip("route", "del", "blackhole", prefix, "proto", ROUTE_PROTO, check=False)
            removed.append(f"route blackhole {prefix}")
    return removed


def _free_third_octet() -> int:
    """A K such that nothing in the root namespace uses 10.231.K.0/24 (starting from the pid,
    so parallel runs spread out; the lock keeps them from picking the same one)."""
    used = ip("-4", "-o", "addr", "show", check=False) + ip("-4", "route", "show", "table", "all")
    start = os.getpid() % 250
    for offset in range(250):
        third = (start + offset) % 250 + 1
        if f"{SUBNET_PREFIX}.{third}." not in used:
            return third
    raise NetnsError(f"no free {SUBNET_PREFIX}.K.0/24 in the root namespace")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with LOCK_PATH.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Host:
    """One namespace: its name, and both ends of its link."""

    index: int
    namespace: str
    root_link: str  # the veth end in the root namespace: the one a partition takes down
    inner_link: str
    root_address: str  # where the host reaches the root namespace (the forwarder listens here)
    address: str  # the host's own address
    partitioned: bool = False

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def pids(self) -> list[int]:
        """Every process running inside this host."""
        out = ip("netns", "pids", self.namespace, check=False)
        return [int(p) for p in out.split() if p.isdigit()]


class Hosts:
    """``count`` network namespaces linked to the root namespace; a context manager that
    removes everything it made, whatever happens."""

    def __init__(self, count: int) -> None:
        if not 1 <= count <= 60:
            raise ValueError("between 1 and 60 hosts")
        self.count = count
        self.hosts: list[Host] = []
        self.blackhole: str | None = None

    def __enter__(self) -> Hosts:
        try:
            with _locked():
                sweep_leftovers()
                third = _free_third_octet()
                self.blackhole = f"{SUBNET_PREFIX}.{third}.0/24"
                ip("route", "add", "blackhole", self.blackhole, "proto", ROUTE_PROTO)
                for index in range(self.count):
                    self._add(index, third)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _add(self, index: int, third: int) -> None:
        pid = os.getpid()
        host = Host(
            index=index,
            namespace=f"{PREFIX}{pid}h{index}",
            root_link=f"{PREFIX}{pid}r{index}",
            inner_link=f"{PREFIX}{pid}n{index}",
            root_address=f"{SUBNET_PREFIX}.{third}.{4 * index + 1}",
            address=f"{SUBNET_PREFIX}.{third}.{4 * index + 2}",
        )
        assert len(host.root_link) <= 15, "interface names are at most 15 characters"
        self.hosts.append(host)  # before creating anything: close() removes what exists
        ns, inner = host.namespace, host.inner_link
        ip("netns", "add", ns)
        ip("link", "add", host.root_link, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", ns)
        ip("addr", "add", f"{host.root_address}/30", "dev", host.root_link)
        ip("link", "set", host.root_link, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{host.address}/30", "dev", inner)
        ip("-n", ns, "link", "set", inner, "up")
        # No default route: only the peer is reachable (no NAT, nothing beyond it).

    def partition(self, host: Host) -> None:
        """Cut ``host`` off: the root end of its link goes down, so nothing passes either way;
        its processes and sockets live on."""
        ip("link", "set", host.root_link, "down")
        host.partitioned = True

    def heal(self, host: Host) -> None:
        """Bring ``host``'s link back up (the kernel restores its route with the address)."""
        ip("link", "set", host.root_link, "up")
        host.partitioned = False

    def close(self) -> None:
        """Kill what runs in the namespaces, delete them, their links and the route."""
        for host in self.hosts:
            _remove_namespace(host.namespace)  # takes the veth pair with it
            if host.root_link in _links():
                ip("link", "del", host.root_link, check=False)
        if self.blackhole is not None:
            ip("route", "del", "blackhole", self.blackhole, "proto", ROUTE_PROTO, check=False)
        leftover = [h.namespace for h in self.hosts if h.namespace in _namespaces()]
        leftover += [h.root_link for h in self.hosts if h.root_link in _links()]
        self.hosts = []
        self.blackhole = None
        if leftover:
            raise NetnsError(f"could not remove {leftover}")


# --- the forwarder --------------------------------------------------------------------------


@dataclass
class Connection:
    """One forwarded connection: which listener took it, when, and when its client's bytes
    were last passed on."""

    label: str
    opened_at: float
    last_forwarded_at: float | None = None
    bytes_forwarded: int = 0


@dataclass
class HttpRequest:
    """One HTTP request a ``HttpTap`` saw forwarded whole (upstream), and when."""

    label: str
    at: float
    method: str
    path: str
    body: bytes
    connection_opened_at: float


Tap = Callable[[bytes], None]


class HttpTap:
    """Splits one connection's client-to-server bytes into HTTP/1.1 requests (Content-Length
    bodies only) and notes each one once its last byte has been forwarded."""

    def __init__(self, label: str, opened_at: float, sink: list[HttpRequest]) -> None:
        self.label = label
        self.opened_at = opened_at
        self.sink = sink
        self.buffer = b""
        self.broken = False

    def __call__(self, data: bytes) -> None:
        if self.broken:
            return
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1").split("\r\n")
            method, _, rest = head[0].partition(" ")
            path = rest.rpartition(" ")[0]
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
                elif name.strip().lower() == "transfer-encoding":
                    self.broken = True  # chunked bodies are not parsed: stop noting
                    return
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body = self.buffer[head_end + 4 : end]
            self.buffer = self.buffer[end:]
            self.sink.append(
                HttpRequest(self.label, time.monotonic(), method, path, body, self.opened_at)
            )


@dataclass
class _Listener:
    label: str
    host: str
    port: int
    target_port: int
    http: bool


@dataclass
class Forwarder:
    """Plain TCP relays in a thread of their own: each listens on an address of the root
    namespace and passes bytes both ways to the same port on 127.0.0.1. Connections are noted
    per listener label; an ``http`` listener also notes every request it forwarded whole."""

    connections: list[Connection] = field(default_factory=list)
    requests: list[HttpRequest] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)
    _transports: set[asyncio.BaseTransport] = field(default_factory=set)

    def __enter__(self) -> Forwarder:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="netns-forwarder", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, coro: object) -> object:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return future.result(timeout=30)

    def listen(self, label: str, host: str, port: int, *, http: bool = False) -> None:
        """Relay ``host:port`` to ``127.0.0.1:port``."""
        listener = _Listener(label, host, port, port, http)
        self._call(self._start(listener))

    async def _start(self, listener: _Listener) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._relay(listener, reader, writer)

        server = await asyncio.start_server(handle, listener.host, listener.port)
        self._servers.append(server)

    async def _relay(
        self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn = Connection(listener.label, time.monotonic())
        self.connections.append(conn)
        self._transports.add(writer.transport)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", listener.target_port)
        except OSError:
            writer.transport.abort()
            self._transports.discard(writer.transport)
            return
        self._transports.add(up_writer.transport)
        tap = HttpTap(listener.label, conn.opened_at, self.requests) if listener.http else None

        def forwarded(data: bytes) -> None:
            conn.last_forwarded_at = time.monotonic()
            conn.bytes_forwarded += len(data)
            if tap is not None:
                tap(data)

        upstream = asyncio.ensure_future(_pump(reader, up_writer, forwarded))
        downstream = asyncio.ensure_future(_pump(up_reader, writer, None))
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (upstream, downstream):
                task.cancel()
            await asyncio.gather(upstream, downstream, return_exceptions=True)
            for transport in (writer.transport, up_writer.transport):
                transport.abort()
                self._transports.discard(transport)

    def close(self) -> None:
        """Stop listening, drop every relayed connection, and end the thread."""
        loop = self._loop
        if loop is None:
            return

        async def shut() -> None:
            for server in self._servers:
                server.close()
            for transport in list(self._transports):
                transport.abort()
            self._transports.clear()
            for server in self._servers:
                await server.wait_closed()
            self._servers.clear()
            await asyncio.sleep(0.05)  # let the relays see their aborted transports
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(shut())
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = None


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    forwarded: Callable[[bytes], None] | None,
) -> None:
    """Copy ``reader`` to ``writer`` until EOF or an error on either side."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while True:
            data = await reader.read(65536)
            if not data:
                return
            writer.write(data)
            if forwarded is not None:
                forwarded(data)
            await writer.drain()
