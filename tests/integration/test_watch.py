"""``chatbatch watch`` on PostgreSQL, stdout not a terminal: one plain line per refresh, and the
command ends (exit code 0) when the batch does, or on Ctrl-C."""

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

from chatbatch.models import batches_table, requests_table
from chatbatch.pricing import ModelPrice, PriceTable
from cli.main import cli
from cli.watch_cmd import _view, _Watcher

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
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
) -> str:
    """A batch of N requests: ``succeeded`` answered (100 + 50 tokens each), ``failed`` failed
    with ``task_failed`` and ``error_message``, the rest queued."""
    rows = []
    for i in range(N):
        state = "succeeded" if i < succeeded else "failed" if i < succeeded + failed else "queued"
        answered = state == "succeeded"
        rows.append(
            {
                "batch_id": "batch_w",
                "line_no": i + 1,
                "custom_id": f"w{i}",
                "model": "gpt-4o-mini",
                "body": "{}",
                "status": state,
                "due_at": T0,
                "completed_at": T0 + timedelta(seconds=i) if state != "queued" else None,
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

    def resumed_and_done() -> None:
        time.sleep(0.3)
        with db.begin() as conn:
            conn.execute(update(batches_table).values(status="completed", finished_at=T0))

    finisher = threading.Thread(target=resumed_and_done)
    finisher.start()
    try:
        watch = CliRunner().invoke(cli, ["watch", "watched", "--interval", "0.1"])
    finally:
        finisher.join()
    assert watch.exit_code == 0, watch.output
    assert "paused: key refused ]0;title by the provider 2J" in watch.output
    assert not any(c in watch.output for c in ESCAPES)

    live = Console(file=io.StringIO(), width=200)  # what the live view draws, without styles
    live.print(_view(_Watcher(db, "batch_w", None).snapshot(), None))
    drawn = live.file.getvalue()  # type: ignore[attr-defined]
    assert "[31mRED[0m [bold]x[/bold]" in drawn  # shown as written, never read as markup
    assert "paused: key refused ]0;title by the provider 2J" in drawn
    assert not any(c in drawn for c in ESCAPES)
