"""The pure parts of ``chatbatch watch``: throughput window, ETA, formatting, the plain line,
the stalled rule and what watch says on a stall or a pause."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chatbatch.reporting.watching import (
    STALL_SECONDS,
    ErrorLine,
    Motion,
    Snapshot,
    StallWatch,
    ThroughputWindow,
    eta_seconds,
    format_duration,
    format_rate,
    is_stalled,
    pause_message,
    plain_line,
    stall_hint,
    untouched_seconds,
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


T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
QUEUED = Motion.of({"queued": 8, "succeeded": 2}, claims=2)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_stalled_when_due_work_waits_untouched_for_the_window() -> None:
    assert is_stalled(unmoved_since=at(0), next_due=at(-60), now=at(STALL_SECONDS))
    assert not is_stalled(unmoved_since=at(0), next_due=at(-60), now=at(STALL_SECONDS - 1))
    assert is_stalled(at(0), at(-60), at(5), stall_seconds=5)


def test_nothing_due_is_never_stalled() -> None:
    assert not is_stalled(at(0), next_due=None, now=at(3600))  # nothing active
    assert not is_stalled(at(0), next_due=at(3601), now=at(3600))  # a retry backs off


def test_work_that_fell_due_lately_has_not_waited_long_enough() -> None:
    # nothing moved for an hour (a poll an hour away), but the poll fell due only 10 s ago
    assert untouched_seconds(at(0), next_due=at(3590), now=at(3600)) == 10
    assert not is_stalled(at(0), at(3590), at(3600))
    assert is_stalled(at(0), at(3590), at(3620))


def test_a_submitting_request_whose_lease_ran_out_is_due_work() -> None:
    # a submitting row's due time is its lease's end: past it, the worker that held it is gone
    lease_end = at(10)
    assert not is_stalled(at(0), lease_end, now=at(35))
    assert is_stalled(at(0), lease_end, now=at(40))


def test_the_watch_starts_counting_at_its_first_refresh() -> None:
    watch = StallWatch(stall_seconds=30)
    assert watch.observe(at(0), QUEUED, next_due=at(-600)) is None  # no history before it
    assert watch.observe(at(29), QUEUED, next_due=at(-600)) is None
    assert watch.observe(at(30), QUEUED, next_due=at(-600)) == 30
    assert watch.observe(at(45), QUEUED, next_due=at(-600)) == 45


def test_any_request_changing_state_clears_the_stall_at_once() -> None:
    watch = StallWatch(stall_seconds=30)
    watch.observe(at(0), QUEUED, at(-600))
    assert watch.observe(at(40), QUEUED, at(-600)) == 40
    moved = Motion.of({"queued": 7, "submitting": 1, "succeeded": 2}, claims=3)
    assert watch.observe(at(41), moved, at(-600)) is None
    assert watch.observe(at(70), moved, at(-600)) is None
    assert watch.observe(at(71), moved, at(-600)) == 30  # stalled again, counted afresh


def test_a_claim_without_a_change_of_state_is_motion() -> None:
    # a worker polling answers that are not ready yet: the rows stay submitted, tokens grow
    watch = StallWatch(stall_seconds=30)
    for second in range(0, 120, 10):
        polling = Motion.of({"submitted": 10}, claims=10 + second)
        assert watch.observe(at(second), polling, next_due=at(second - 1)) is None


def test_motion_ignores_the_order_of_the_counts_and_empty_states() -> None:
    assert Motion.of({"queued": 1, "failed": 0, "succeeded": 2}, 5) == Motion.of(
        {"succeeded": 2, "queued": 1}, 5
    )
    assert Motion.of({"queued": 1}, 5) != Motion.of({"queued": 1}, 6)


def test_stall_hint_on_the_embedded_default() -> None:
    hint = stall_hint("nightly", 30, embedded=True, broker=False)
    assert hint.startswith("nothing has moved for 30s although work is due: ")
    assert "no `chatbatch process` seems to be working this batch" in hint
    assert "Start one: `chatbatch process nightly` (on this machine" in hint
    assert "`chatbatch worker`" not in hint  # none runs without a broker


def test_stall_hint_with_a_broker_names_the_worker_first() -> None:
    hint = stall_hint("nightly", 95, embedded=False, broker=True)
    assert hint.startswith("nothing has moved for 1m35s although work is due: ")
    assert "no `chatbatch worker` or `chatbatch process` seems to be working this batch" in hint
    assert "Start one: `chatbatch worker`" in hint
    assert "`chatbatch process nightly`" in hint


def test_stall_hint_on_a_database_without_a_broker() -> None:
    hint = stall_hint("nightly", 30, embedded=False, broker=False)
    assert "no `chatbatch process` or worker seems to be working this batch" in hint
    assert "Start one: `chatbatch process nightly`" in hint
    assert "`chatbatch worker` (with CHATBATCH_BROKER_URL set)" in hint


def test_paused_is_not_done_but_ends_the_watch_with_what_to_do() -> None:
    snap = snapshot(status="paused", pause_reason="401 from provider.")
    assert snap.paused and not snap.done
    assert not snapshot().paused
    message = pause_message(snap)
    assert message.startswith("nightly is paused: 401 from provider. Fix the cause, then ")
    assert "`chatbatch resume nightly`" in message
    assert "no reason recorded" in pause_message(snapshot(status="paused"))


def test_pause_message_is_printable() -> None:
    snap = snapshot(status="paused", pause_reason="key refused \x1b]0;title\x07")
    assert "\x1b" not in pause_message(snap) and "\x07" not in pause_message(snap)
