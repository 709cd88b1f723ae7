"""``chatbatch watch`` on PostgreSQL, stdout not a terminal: one plain line per refresh, and the
command ends (exit code 0) when the batch does, or on Ctrl-C, and with exit code 4 and the reason
when it is paused; when work is due and nothing moves, it says once that nobody seems to work the
batch (the live view too)."""

from __future__ import annotations

import io
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import Engine, insert, update

from chatbatch.rules.pricing import ModelPrice, PriceTable
from chatbatch.settings import get_settings
from chatbatch.store.db import db_now
from chatbatch.store.models import batches_table, requests_table
from cli.main import cli
from cli.watch_cmd import _view, _watch_live, _Watcher

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
FINISHED = ("succeeded", "failed")
N = 10
PRICES = PriceTable(models={"gpt-4o-mini": ModelPrice(input=Decimal(1), output=Decimal(2))})


def make_batch(
    engine: Engine,
    *,
    status: str,
    succeeded: int,
    failed: int = 0,
    error_message: str = "model refused [bold]x[/]",
    pause_reason: str | None = None,
    rest: str = "queued",
    due_at: datetime = T0,
) -> str:
    """A batch of N requests: ``succeeded`` answered (100 + 50 tokens each), ``failed`` failed
    with ``task_failed`` and ``error_message``, the rest in state ``rest``, due at ``due_at``
    (for a submitting row: its lease's end)."""
    rows = []
    for i in range(N):
        state = "succeeded" if i < succeeded else "failed" if i < succeeded + failed else rest
        answered = state == "succeeded"
        rows.append(
            {
                "batch_id": "batch_w",
                "line_no": i + 1,
                "custom_id": f"w{i}",
                "model": "gpt-4o-mini",
                "body": "{}",
                "status": state,
                "due_at": due_at,
                "completed_at": T0 + timedelta(seconds=i) if state in FINISHED else None,
                "prompt_tokens": 100 if answered else None,
                "completion_tokens": 50 if answered else None,
                "total_tokens": 150 if answered else None,
                "error_code": "task_failed" if state == "failed" else None,
                "error_message": error_message if state == "failed" else None,
            }
        )
    with engine.begin() as conn:
        conn.execute(
            insert(batches_table).values(
                id="batch_w",
                name="watched",
                status=status,
                pause_reason=pause_reason,
                total=N,
                created_at=T0,
                prices=PRICES.model_dump_json(),
            )
        )
        conn.execute(insert(requests_table), rows)
    return "batch_w"


def test_watch_a_finished_batch_prints_one_line_and_exits(db: Engine) -> None:
    make_batch(db, status="completed", succeeded=N - 2, failed=2)
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["watch", "watched", "--interval", "5"])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 5  # no refresh wait once finished
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("watched completed · 10/10 finished (succeeded 8, failed 2)")
    assert "ETA" not in line
    cost = 8 * (Decimal(100) * 1 + 50 * 2) / 1_000_000  # the price table stored with the batch
    assert f"cost {cost.normalize():f} USD" in line
    assert "errors task_failed 2" in line


def test_watch_follows_a_batch_to_its_end(db: Engine) -> None:
    make_batch(db, status="running", succeeded=2)

    def work() -> None:
        for i in range(2, N):
            time.sleep(0.25)
            with db.begin() as conn:
                conn.execute(
                    update(requests_table)
                    .where(requests_table.c.custom_id == f"w{i}")
                    .values(status="succeeded", completed_at=T0, total_tokens=150)
                )
        with db.begin() as conn:
            conn.execute(update(batches_table).values(status="completed", finished_at=T0))

    worker = threading.Thread(target=work)
    worker.start()
    try:
        result = CliRunner().invoke(cli, ["watch", "batch_w", "--interval", "0.2"])
    finally:
        worker.join()
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) >= 3, lines
    assert lines[0].startswith("watched running · ")
    assert "ETA" in lines[0]
    assert any("/s · ETA " in line and "–" not in line.split("ETA ")[1][:2] for line in lines)
    assert lines[-1].startswith("watched completed · 10/10 finished (succeeded 10)")
    finished = [int(line.split(" · ")[1].split("/")[0]) for line in lines]
    assert finished == sorted(finished)


def test_ctrl_c_stops_watching_with_exit_code_zero(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_batch(db, status="running", succeeded=1)

    calls = []
    real_snapshot = _Watcher.snapshot

    def interrupted_on_second_refresh(self: _Watcher) -> object:
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real_snapshot(self)

    monkeypatch.setattr(_Watcher, "snapshot", interrupted_on_second_refresh)
    result = CliRunner().invoke(cli, ["watch", "watched", "--interval", "0.1"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("watched running · 1/10 finished")
    assert lines[-1] == "stopped watching; the batch carries on"


def test_watch_an_unknown_batch_fails(db: Engine) -> None:
    result = CliRunner().invoke(cli, ["watch", "nope"])
    assert result.exit_code != 0
    assert "no batch" in result.output


ESCAPES = "\x1b", "\x07", "\x9b"
RED_MESSAGE = "\x1b[31mRED\x1b[0m [bold]x[/bold]"
TITLE_REASON = "key refused \x1b]0;title\x07 by the provider \x9b2J"


def test_status_and_watch_never_print_the_providers_escape_sequences(db: Engine) -> None:
    make_batch(
        db,
        status="paused",
        succeeded=N - 2,
        failed=2,
        error_message=RED_MESSAGE,
        pause_reason=TITLE_REASON,
    )
    status = CliRunner().invoke(cli, ["status", "watched"])
    assert status.exit_code == 0, status.output
    assert "paused      key refused ]0;title by the provider 2J" in status.output
    assert not any(c in status.output for c in ESCAPES)

    watch = CliRunner().invoke(cli, ["watch", "watched", "--interval", "0.1"])
    assert watch.exit_code == 4, watch.output
    assert "paused: key refused ]0;title by the provider 2J" in watch.stdout
    assert "watched is paused: key refused ]0;title by the provider 2J" in watch.stderr
    assert not any(c in watch.output for c in ESCAPES)

    live = Console(file=io.StringIO(), width=200)  # what the live view draws, without styles
    live.print(_view(_Watcher(db, "batch_w", None).snapshot(), None))
    drawn = live.file.getvalue()  # type: ignore[attr-defined]
    assert "[31mRED[0m [bold]x[/bold]" in drawn  # shown as written, never read as markup
    assert "paused: key refused ]0;title by the provider 2J" in drawn
    assert not any(c in drawn for c in ESCAPES)


def set_batch(db: Engine, **values: object) -> None:
    """Change the batch row as a worker or an operator would."""
    with db.begin() as conn:
        conn.execute(update(batches_table).values(**values))


def finish_rows(db: Engine, *custom_ids: str) -> None:
    """Mark requests succeeded, as a worker landing their answers would."""
    with db.begin() as conn:
        conn.execute(
            update(requests_table)
            .where(requests_table.c.custom_id.in_(custom_ids))
            .values(status="succeeded", completed_at=T0, total_tokens=150)
        )


def in_background(*steps: tuple[float, object]) -> threading.Thread:
    """Run each (delay, action) in turn on a thread: the batch's life while watch follows it."""

    def play() -> None:
        for delay, action in steps:
            time.sleep(delay)
            action()  # type: ignore[operator]

    thread = threading.Thread(target=play)
    thread.start()
    return thread


def test_watch_ends_on_a_paused_batch_with_exit_code_4_the_reason_and_what_to_do(
    db: Engine,
) -> None:
    make_batch(db, status="paused", succeeded=3, pause_reason="the provider refused the key (401)")
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["watch", "watched", "--interval", "5"])
    assert result.exit_code == 4, result.output
    assert time.monotonic() - started < 5  # no refresh wait: it ends at once
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("watched paused · 3/10 finished")
    assert lines[0].endswith("paused: the provider refused the key (401)")
    assert result.stderr.strip() == (
        "watched is paused: the provider refused the key (401). Fix the cause, then "
        "`chatbatch resume watched` (and `chatbatch process watched` where no worker runs)"
    )


def test_watch_ends_when_the_batch_is_paused_while_watched(db: Engine) -> None:
    make_batch(db, status="running", succeeded=1, due_at=datetime.now(UTC) + timedelta(hours=1))
    pauser = in_background(
        (0.4, lambda: set_batch(db, status="paused", pause_reason="cost cap 0.50 USD reached"))
    )
    try:
        result = CliRunner().invoke(cli, ["watch", "watched", "--interval", "0.1"])
    finally:
        pauser.join()
    assert result.exit_code == 4, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("watched running · 1/10 finished")
    assert lines[-1].startswith("watched paused · 1/10 finished")
    assert "watched is paused: cost cap 0.50 USD reached. Fix the cause" in result.stderr


HINT_START = "nothing has moved for "
NOBODY = "although work is due: no `chatbatch process` or worker seems to be working this batch"


def test_watch_says_once_per_stall_that_nobody_works_the_batch(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cli.watch_cmd.STALL_SECONDS", 0.5)
    make_batch(db, status="running", succeeded=2)  # eight queued requests, due long ago
    life = in_background(
        (1.5, lambda: finish_rows(db, "w2")),  # someone works one request, then stops again
        (1.5, lambda: finish_rows(db, *(f"w{i}" for i in range(3, N)))),
        (0.3, lambda: set_batch(db, status="completed", finished_at=T0)),
    )
    try:
        result = CliRunner().invoke(cli, ["watch", "watched", "--interval", "0.1"])
    finally:
        life.join()
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    hints = [i for i, line in enumerate(lines) if line.startswith(HINT_START)]
    assert len(hints) == 2, lines  # once per stall, not at every refresh
    first, second = hints
    assert all(" 2/10 finished" in line for line in lines[:first])
    assert any(" 3/10 finished" in line for line in lines[first:second])  # moving again
    assert " 3/10 finished" in lines[second - 1]  # the second stall, after the move
    assert lines[-1].startswith("watched completed · 10/10 finished")
    hint = lines[first]
    assert NOBODY in hint
    assert "Start one: `chatbatch process watched` (anywhere that reaches this database)" in hint
    assert "or `chatbatch worker` (with CHATBATCH_BROKER_URL set)" in hint


def test_the_stall_hint_names_the_worker_when_a_broker_is_configured(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cli.watch_cmd.STALL_SECONDS", 0.3)
    monkeypatch.setenv("CHATBATCH_BROKER_URL", "redis://127.0.0.1:6379/0")
    get_settings.cache_clear()
    make_batch(db, status="running", succeeded=2)
    closer = in_background((1.2, lambda: set_batch(db, status="cancelled", finished_at=T0)))
    try:
        result = CliRunner().invoke(cli, ["watch", "watched", "--interval", "0.1"])
    finally:
        closer.join()
    assert result.exit_code == 0, result.output
    hints = [line for line in result.stdout.splitlines() if line.startswith(HINT_START)]
    assert len(hints) == 1, result.stdout
    assert "no `chatbatch worker` or `chatbatch process` seems to be working" in hints[0]
    assert "Start one: `chatbatch worker` (it takes work from CHATBATCH_BROKER_URL)" in hints[0]


def test_a_submitting_request_is_due_work_once_its_lease_runs_out(db: Engine) -> None:
    with db.connect() as conn:
        lease_end = db_now(conn) + timedelta(seconds=1)
    make_batch(db, status="running", succeeded=2, rest="submitting", due_at=lease_end)
    watcher = _Watcher(db, "batch_w", None, stall_seconds=0.3)
    watcher.snapshot()
    time.sleep(0.6)
    watcher.snapshot()
    assert watcher.stalled_for is None  # nothing moved, but the worker may still be sending
    time.sleep(0.9)  # past the lease's end plus the stall window: the worker is gone
    watcher.snapshot()
    assert watcher.stalled_for is not None and watcher.stalled_for >= 0.3


def test_a_worker_polling_answers_that_are_not_ready_is_not_stalled(db: Engine) -> None:
    make_batch(db, status="running", succeeded=2, rest="submitted")  # polls due long ago
    watcher = _Watcher(db, "batch_w", None, stall_seconds=0.3)
    watcher.snapshot()
    for i in range(8):  # every poll claims a row: its lease token grows, its state stays
        with db.begin() as conn:
            conn.execute(
                update(requests_table)
                .where(requests_table.c.custom_id == f"w{2 + i % 8}")
                .values(lease_token=requests_table.c.lease_token + 1)
            )
        time.sleep(0.1)
        watcher.snapshot()
        assert watcher.stalled_for is None, i
    time.sleep(0.4)  # the poller is gone
    watcher.snapshot()
    assert watcher.stalled_for is not None


def test_the_live_view_shows_the_stall_hint_and_ends_on_a_pause(db: Engine) -> None:
    make_batch(db, status="running", succeeded=2)
    watcher = _Watcher(db, "batch_w", None, stall_seconds=0.3)
    drawn = io.StringIO()
    console = Console(file=drawn, force_terminal=True, width=400)
    pauser = in_background((1.0, lambda: set_batch(db, status="paused", pause_reason="401")))
    try:
        last = _watch_live(watcher, console, 0.1)
    finally:
        pauser.join()
    assert last.paused and last.pause_reason == "401"
    assert NOBODY in drawn.getvalue()
    assert "Start one: `chatbatch process watched`" in drawn.getvalue()
    assert NOBODY not in str(_view(last, None, watcher.hint(last)).renderables[-1])
