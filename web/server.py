"""The dashboard served from a thread of this process on a free loopback port: for embedding
it in a program, a benchmark or a test (``chatbatch serve`` runs uvicorn in the foreground)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette

START_SECONDS = 10.0


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """``app`` under uvicorn on 127.0.0.1 and a port the kernel picked; yields its base URL
    once it listens, and stops it on leaving."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_SECONDS
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        if not server.started:
            raise RuntimeError("the dashboard did not start listening")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=START_SECONDS)
        sock.close()
