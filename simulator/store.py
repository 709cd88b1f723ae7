"""A task store in a small SQLite file, so a simulator started later, or running beside this one
in another process, answers every task this one accepted exactly as this one would have.

Each accepted task is one row, committed before its POST is answered, so it survives the process
being killed; the POSTs of one event-loop iteration share a transaction. The file is WAL with
synchronous=OFF: never an fsync, which would stall the event loop for milliseconds now and then;
a power cut may then spoil it, and losing it only loses simulated tasks (delete it). Tasks live
in memory as well, so polls of tasks this instance holds never touch the file; an unknown id
costs one SELECT, after which it is held too.
Times are kept in the file as wall-clock seconds and converted to this process's monotonic clock
on the way in and out, so a ``Task`` has one notion of time whichever store holds it.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from simulator.state import Task

SCHEMA_VERSION = 1
BUSY_SECONDS = 10.0  # how long a write waits for another instance's to finish
SWEEP_SECONDS = 1.0  # how often expired rows are deleted from the file
COLUMNS = "id, body, fingerprint, created_wall, created, ready_at, fails, nul, poison, fetched"
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sim_tasks (
        id TEXT PRIMARY KEY,
        body BLOB NOT NULL,           -- the request, as JSON
        fingerprint TEXT NOT NULL,
        created_wall INTEGER NOT NULL, -- unix seconds, as the API reports them
        created REAL NOT NULL,         -- unix seconds
        ready_at REAL NOT NULL,        -- unix seconds
        fails INTEGER NOT NULL,
        nul INTEGER NOT NULL,
        poison TEXT,                   -- hostile mode: the plan answering its polls
        fetched INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS sim_tasks_created ON sim_tasks (created)",
)

INSERT = f"INSERT INTO sim_tasks ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
MARK_FETCHED = "UPDATE sim_tasks SET fetched = 1 WHERE id = ?"
PollKindOf = Callable[[str], Any]  # a stored poison name -> its hostile.PollKind, or None


class SqliteTaskStore:
    """Tasks by id in a SQLite file shared by every simulator given the same path, with the
    ones this instance created or read held in memory; rows older than the retention window
    are deleted on an occasional sweep."""

    def __init__(self, path: Path, *, poll_kind_of: PollKindOf | None = None) -> None:
        self.path = Path(path)
        self._db = open_store(self.path)
        self._poll_kind_of = poll_kind_of or (lambda _name: None)
        self._offset = time.time() - time.monotonic()  # wall = monotonic + offset
        self._tasks: dict[str, Task] = {}
        self._by_age: list[tuple[float, str]] = []  # a heap of (created, id): expiry order
        self._cutoff = -math.inf  # wall seconds: rows created before are expired
        self._last_sweep = -math.inf
        self._unsaved: list[tuple[Any, ...]] = []  # rows of tasks added since the last write
        self._unsaved_fetches: list[tuple[str]] = []  # ids first fetched since the last write
        self._writing: asyncio.Future[None] | None = None  # the write the unsaved rows await
        self._closed = False

    def __len__(self) -> int:
        """Unexpired tasks in the file, whichever instance created them."""
        self._write()
        query = "SELECT count(*) FROM sim_tasks WHERE created >= ?"
        count: int = self._db.execute(query, (self._cutoff,)).fetchone()[0]
        return count

    def add(self, task: Task) -> None:
        """Hold ``task`` in memory and queue its row for the next write (see ``saved``)."""
        self._hold(task)
        self._unsaved.append(self._row_of(task))
        if self._writing is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used outside a server: write now
            self._write()
            return
        self._writing = loop.create_future()
        loop.call_soon(self._write)

    def saved(self) -> Awaitable[None] | None:
        """What to await before answering that a task was accepted: the write that commits the
        tasks added so far, in one transaction for all the POSTs of a loop iteration (a commit
        per task would cost each POST a GIL round trip); None when nothing waits."""
        return None if self._writing is None else asyncio.shield(self._writing)

    def get(self, task_id: str) -> Task | None:
        """The task with ``task_id``: from memory, else from the file unless it expired."""
        task = self._tasks.get(task_id)
        if task is not None:
            return task
        try:
            row = self._db.execute(
                f"SELECT {COLUMNS} FROM sim_tasks WHERE id = ? AND created >= ?",
                (task_id, self._cutoff),
            ).fetchone()
        except UnicodeEncodeError:  # a lone surrogate in the id: no task has it
            return None
        if row is None:
            return None
        task = self._task_of(row)
        self._hold(task)
        return task

    def expire(self, now: float, retention: float) -> int:
        """Forget held tasks created more than ``retention`` seconds before ``now`` and, when some
        were or a sweep is due, delete such rows from the file; the rows deleted."""
        cutoff = now - retention
        self._cutoff = cutoff + self._offset
        evicted = False
        heap = self._by_age
        while heap and heap[0][0] < cutoff:
            self._tasks.pop(heapq.heappop(heap)[1], None)
            evicted = True
        if not evicted and now - self._last_sweep < SWEEP_SECONDS:
            return 0
        self._last_sweep = now
        self._write()
        deleted = self._db.execute("DELETE FROM sim_tasks WHERE created < ?", (self._cutoff,))
        return deleted.rowcount

    def note_fetched(self, task: Task) -> None:
        """Mark ``task`` fetched in the file with the next write or sweep (only stats use it)."""
        self._unsaved_fetches.append((task.id,))

    def clear(self) -> None:
        """Forget every task, in memory and in the file (every instance sharing it loses them)."""
        self._unsaved.clear()
        self._unsaved_fetches.clear()
        self._write()  # wakes whoever waits for the rows just dropped
        self._db.execute("DELETE FROM sim_tasks")
        self._tasks.clear()
        self._by_age.clear()

    def close(self) -> None:
        """Write what is pending and close the file (again: nothing)."""
        if self._closed:
            return
        self._closed = True
        self._write()
        self._db.close()

    def _hold(self, task: Task) -> None:
        """Keep ``task`` in memory until it expires."""
        self._tasks[task.id] = task
        heapq.heappush(self._by_age, (task.created, task.id))

    def _write(self) -> None:
        """Commit the queued rows and "fetched" flags in one transaction, then wake whoever
        waits for them (with the error, if the write failed: their POSTs then fail, and their
        tasks are forgotten, as a provider that failed to take them)."""
        rows, fetches, waiting = self._unsaved, self._unsaved_fetches, self._writing
        self._unsaved, self._unsaved_fetches, self._writing = [], [], None
        error: BaseException | None = None
        if rows or fetches:
            try:
                with transaction(self._db):
                    self._db.executemany(INSERT, rows)
                    self._db.executemany(MARK_FETCHED, fetches)
            except sqlite3.Error as exc:
                error = exc
                for row in rows:
                    self._tasks.pop(row[0], None)
        if waiting is not None and not waiting.done():
            if error is None:
                waiting.set_result(None)
            else:
                waiting.set_exception(error)
        elif error is not None:
            raise error

    def _row_of(self, task: Task) -> tuple[Any, ...]:
        """The row that stands for ``task``, its times as wall-clock seconds."""
        return (
            task.id,
            orjson.dumps(task.body),
            task.fingerprint,
            task.created_wall,
            task.created + self._offset,
            task.ready_at + self._offset,
            task.fails,
            task.nul,
            task.poison if task.poll_poison is not None else None,
            task.fetched,
        )

    def _task_of(self, row: tuple[Any, ...]) -> Task:
        """The Task a row stands for, its times on this process's monotonic clock."""
        task_id, body, fingerprint, created_wall, created, ready_at, fails, nul, poison, fetched = (
            row
        )
        poll_poison = None if poison is None else self._poll_kind_of(poison)
        return Task(
            id=task_id,
            body=orjson.loads(body),
            fingerprint=fingerprint,
            created_wall=created_wall,
            created=created - self._offset,
            ready_at=ready_at - self._offset,
            fails=bool(fails),
            nul=bool(nul),
            fetched=bool(fetched),
            poll_poison=poll_poison,
            poison=poison if poll_poison is not None else None,
        )


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def open_store(path: Path) -> sqlite3.Connection:
    """An autocommit connection to the task file at ``path`` (made, folders too, if missing);
    ValueError if the file is some other database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None)
    try:
        _set_wal(db)
        db.execute("PRAGMA synchronous = OFF")  # see the module's docstring
        with transaction(db):
            _create_schema(db, path)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise ValueError(f"cannot keep the simulator's tasks in {path}: {exc}") from None
    except BaseException:
        db.close()
        raise
    return db


def _set_wal(db: sqlite3.Connection) -> None:
    """Switch a file to WAL. Two processes opening a new file at once can find it locked (the
    busy timeout does not cover a journal-mode change), so this is tried again a while."""
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _create_schema(db: sqlite3.Connection, path: Path) -> None:
    """Make the table in a new file; refuse a file made by something else or a later version."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    others = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if version != 0 or others:
        raise ValueError(
            f"{path} is not a simulator task store (schema version {version}, "
            f"{others} other object(s)); give the simulator a file of its own"
        )
    for statement in SCHEMA:
        db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
