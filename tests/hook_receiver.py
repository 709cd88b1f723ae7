"""A webhook receiver for the notification tests: a real HTTP server on loopback that keeps
every POST it gets and answers with a status (and after a delay) the test chooses."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson


class Receiver(ThreadingHTTPServer):
    """What was POSTed (path and body, in arrival order), and how to answer."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[str, bytes]] = []
        self.status = 204
        self.delay = 0.0

    def url(self, path: str = "/hook?token=s3cret") -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"

    def bodies(self) -> list[dict]:
        return [orjson.loads(body) for _, body in self.received]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        time.sleep(self.server.delay)
        self.server.received.append((self.path, body))
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A receiver serving from a thread until the block ends."""
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
