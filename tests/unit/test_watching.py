"""The pure parts of ``chatbatch watch``: throughput window, ETA, formatting, the plain line."""

from __future__ import annotations

import pytest

from chatbatch.watching import (
    ErrorLine,
    Snapshot,
    ThroughputWindow,
    eta_seconds,
    format_duration,
    format_rate,
    plain_line,
)


def test_rate_needs_two_samples() -> None:
    window = ThroughputWindow()
    assert window.rate() is None
    window.add(100.0, 5)
    assert window.rate() is None
    window.add(101.0, 15)
    assert window.rate() == pytest.approx(10.0)


def test_rate_covers_only_the_last_window() -> None:
    window = ThroughputWindow(window_seconds=10)
    # 100/s for 20 s, then 10/s for 10 s: the window sees only the slow part
    finished = 0
    for t in range(21):
        window.add(float(t), finished)
        finished += 100
    finished -= 100
    for t in range(21, 31):
        finished += 10
        window.add(float(t), finished)
    assert window.rate() == pytest.approx(10.0)


def test_window_keeps_an_anchor_at_its_start() -> None:
    window = ThroughputWindow(window_seconds=10)
    window.add(0.0, 0)
    window.add(30.0, 300)  # a long pause between refreshes: the only two samples stay
    assert window.rate() == pytest.approx(10.0)


def test_samples_every_interval_give_a_steady_rate() -> None:
    window = ThroughputWindow(window_seconds=10)
    for i in range(100):
        window.add(i * 0.5, i * 3)
    assert window.rate() == pytest.approx(6.0)


def test_a_count_that_goes_down_starts_afresh() -> None:
    window = ThroughputWindow()
    window.add(0.0, 100)
    window.add(1.0, 200)
    window.add(2.0, 50)  # retry requeued rows
    assert window.rate() is None
    window.add(4.0, 60)
    assert window.rate() == pytest.approx(5.0)


def test_no_progress_is_a_zero_rate() -> None:
    window = ThroughputWindow()
    window.add(0.0, 7)
    window.add(5.0, 7)
    assert window.rate() == 0.0


@pytest.mark.parametrize(
    ("remaining", "rate", "expected"),
    [(0, None, 0.0), (0, 3.0, 0.0), (100, None, None), (100, 0.0, None), (100, 4.0, 25.0)],
)
def test_eta(remaining: int, rate: float | None, expected: float | None) -> None:
    assert eta_seconds(remaining, rate) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "–"),
        (0, "0s"),
        (0.2, "1s"),
        (59, "59s"),
        (60, "1m00s"),
        (185, "3m05s"),
        (3600 * 2 + 7 * 60, "2h07m"),
        (86400 * 3 + 3600 * 4, "3d04h"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_rate() -> None:
    assert format_rate(None) == "–"
    assert format_rate(0.0) == "0.0/s"
    assert format_rate(2.345) == "2.35/s"
    assert format_rate(123.4) == "123.4/s"


def snapshot(**changes: object) -> Snapshot:
    values: dict[str, object] = {
        "name": "nightly",
        "status": "running",
        "total": 10,
        "counts": {"queued": 4, "submitted": 2, "succeeded": 3, "failed": 1, "expired": 0},
    }
    return Snapshot(**(values | changes))  # type: ignore[arg-type]


def test_snapshot_sums() -> None:
    snap = snapshot()
    assert snap.finished == 4
    assert snap.remaining == 6
    assert not snap.done
    assert snapshot(status="completed").done
    assert snapshot(status="cancelled").done
    assert not snapshot(status="paused").done


def test_plain_line_while_running() -> None:
    line = plain_line(
        snapshot(cost="0.12 USD", errors=[ErrorLine("task_failed", 1, "boom")]), rate=2.0
    )
    assert line == (
        "nightly running · 4/10 finished (queued 4, submitted 2, succeeded 3, failed 1) · "
        "2.00/s · ETA 3s · cost 0.12 USD · errors task_failed 1"
    )


def test_plain_line_when_done_has_no_eta() -> None:
    counts = {"succeeded": 9, "failed": 1}
    line = plain_line(snapshot(status="completed", counts=counts), rate=None)
    assert line == "nightly completed · 10/10 finished (succeeded 9, failed 1)"


def test_plain_line_says_why_a_batch_is_paused() -> None:
    line = plain_line(snapshot(status="paused", pause_reason="401 from provider"), rate=0.0)
    assert "ETA –" in line
    assert line.endswith("paused: 401 from provider")


def test_provider_text_in_a_snapshot_is_printable() -> None:
    snap = snapshot(
        name="night\x1b[2Jly",
        status="paused",
        pause_reason="key refused \x1b]0;title\x07",
        cost="unknown (no price for gpt\x1b[31m-x)",
        errors=[ErrorLine("task\x1b[5m_failed", 2, "\x1b[31mRED\x1b[0m\r [bold]x[/bold]\nmore")],
    )
    assert snap.pause_reason == "key refused ]0;title"
    assert snap.errors[0].last_message == "[31mRED[0m [bold]x[/bold]\nmore"  # lines kept
    line = plain_line(snap, rate=None)
    assert not any(c in line for c in "\x1b\x07\r")
    assert line.startswith("night[2Jly paused") and "errors task[5m_failed 2" in line
    assert "cost unknown (no price for gpt[31m-x)" in line
