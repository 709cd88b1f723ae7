"""A download streamed as it is written: the exporter writes into a file object on a thread of
its own, the response reads chunks from a small bounded queue (so memory stays flat however
big the batch) and a reader who goes away stops the writer at its next write."""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO, Any, cast

from starlette.concurrency import run_in_threadpool

CHUNK_BYTES = 64 * 1024
QUEUE_CHUNKS = 16
PUT_WAIT_SECONDS = 0.5
_DONE = object()


class _Pipe(io.RawIOBase):
    """The writer's end: writes gather into chunks of ``CHUNK_BYTES`` on the queue;
    BrokenPipeError once the reader has gone."""

    def __init__(self, chunks: queue.Queue[object], stop: threading.Event) -> None:
        super().__init__()
        self._chunks, self._stop = chunks, stop
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buffer += data
        if len(self._buffer) >= CHUNK_BYTES:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self._buffer:
            return
        chunk = bytes(self._buffer)
        self._buffer.clear()
        if not _put(self._chunks, self._stop, chunk):
            raise BrokenPipeError("the reader went away")


class Download:
    """The bytes ``write_all`` writes, as they are written (iterate it once); ``close()``
    stops the writer at its next write and the reading at its next wait."""

    def __init__(self, write_all: Callable[[IO[bytes]], object]) -> None:
        self._chunks: queue.Queue[object] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._stop = threading.Event()
        args = (write_all, self._chunks, self._stop)
        threading.Thread(target=_produce, args=args, daemon=True).start()

    def __iter__(self) -> Iterator[bytes]:
        """The chunks in order; an error the writer raised is raised after those before it."""
        while not self._stop.is_set():
            try:
                item = self._chunks.get(timeout=PUT_WAIT_SECONDS)
            except queue.Empty:
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(bytes, item)

    def close(self) -> None:
        self._stop.set()


async def relayed(download: Download) -> AsyncIterator[bytes]:
    """``download`` for an ASGI response: each wait on a thread of the pool, and the writer
    stopped however the response ends (a reader who went away cancels it)."""
    chunks = iter(download)
    try:
        while (chunk := await run_in_threadpool(next, chunks, None)) is not None:
            yield chunk
    finally:
        download.close()


def _produce(
    write_all: Callable[[IO[bytes]], object], chunks: queue.Queue[object], stop: threading.Event
) -> None:
    """Run the writer into the pipe; then the end marker (after its error, if it failed)."""
    try:
        out = _Pipe(chunks, stop)
        write_all(cast(IO[bytes], out))
        out.flush()
    except BrokenPipeError:
        return
    except Exception as exc:  # handed to the reader, who raises it in the response
        _put(chunks, stop, exc)
    _put(chunks, stop, _DONE)


def _put(chunks: queue.Queue[object], stop: threading.Event, item: object) -> bool:
    """Queue ``item`` unless the reader has gone (False then)."""
    while not stop.is_set():
        try:
            chunks.put(item, timeout=PUT_WAIT_SECONDS)
            return True
        except queue.Full:
            continue
    return False
