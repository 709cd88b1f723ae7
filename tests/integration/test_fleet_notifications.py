"""Notifications from the fleet on PostgreSQL: each event recorded once where it happens, sent by
whichever worker claims it, once when senders race, again when a sender died mid-send."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from engine_helpers import load, write_requests
from hook_receiver import Receiver
from sqlalchemy import Engine, select, update

from chatbatch.reporting.summary import batch_summary
from chatbatch.rules.states import RequestStatus, Transition
from chatbatch.settings import get_settings
from chatbatch.store import claims, notifications, reads, sweeps
from chatbatch.store.db import db_now
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import notifications_table as n
from chatbatch.store.models import requests_table as r
from chatbatch.store.writes import apply_transition, pause_batch
from worker.notifier import Notifier

WARNING = timedelta(days=2)
STALL = timedelta(minutes=15)


def _batch(pg: Engine, tmp_path, hook: Receiver, n_requests: int = 5) -> str:
    write_requests(tmp_path / "in.jsonl", n_requests)
    batch_id = load(pg, tmp_path / "in.jsonl")
    with pg.begin() as conn:
        notifications.set_url(conn, batch_id, hook.url())
    return batch_id


def _finish(pg: Engine, batch_id: str) -> list[str]:
    """Mark every request answered and close the batch as housekeeping does, recording the
    event (both workers' sweeps may try: only one closes it)."""
    with pg.begin() as conn:
        conn.execute(update(r).where(r.c.batch_id == batch_id).values(status="succeeded"))
    with pg.begin() as conn:
        finished = sweeps.finish_batches(conn, now=db_now(conn))
        for closed in finished:
            notifications.record(conn, closed, notifications.FINISHED)
    return finished


def _events(pg: Engine) -> list[tuple]:
    with pg.connect() as conn:
        query = select(n.c.event, n.c.attempts, n.c.sent_at.is_not(None)).order_by(n.c.id)
        return [tuple(row) for row in conn.execute(query)]


def test_racing_senders_send_each_event_once(pg, tmp_path, hook) -> None:
    hook.delay = 0.3  # both senders are busy at once
    batch_id = _batch(pg, tmp_path, hook)
    with pg.begin() as conn:
        assert pause_batch(conn, batch_id, "account refused (HTTP 402)")
        assert not pause_batch(conn, batch_id, "again")  # already paused: no second event
    with pg.begin() as conn:
        conn.execute(update(r).where(r.c.batch_id == batch_id).values(status="queued"))
    assert _finish(pg, batch_id) == []  # paused, not closed
    senders = [Notifier(pg, get_settings()) for _ in range(2)]
    threads = [threading.Thread(target=sender.deliver) for sender in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (paused,) = hook.bodies()
    assert paused["event"] == "batch.paused" and paused["status"] == "paused"
    assert paused["detail"] == "account refused (HTTP 402)" and paused["exit_code"] == 4
    assert paused["event_id"] and paused["id"] == batch_id
    assert _events(pg) == [("batch.paused", 1, True)]


def test_a_finished_batch_is_announced_once_and_the_expiring_warning_once(
    pg, tmp_path, hook
) -> None:
    batch_id = _batch(pg, tmp_path, hook)
    with pg.begin() as conn:
        now = db_now(conn)
        conn.execute(
            update(r)
            .where(r.c.batch_id == batch_id)
            .values(status="submitted", remote_id="t", expires_at=now + timedelta(days=1))
        )
    for _ in range(2):  # two workers' ticks see the same requests at risk
        with pg.begin() as conn:
            notifications.record_expiring(conn, now=db_now(conn), warning=WARNING)
    assert Notifier(pg, get_settings()).deliver() == []
    assert _finish(pg, batch_id) == [batch_id]
    assert _finish(pg, batch_id) == []
    assert Notifier(pg, get_settings()).deliver() == []
    events = [(body["event"], body["status"]) for body in hook.bodies()]
    assert events == [("batch.expiring", "running"), ("batch.finished", "completed")]
    finished = hook.bodies()[1]
    assert finished["exit_code"] == 0 and finished["counts"]["succeeded"] == 5
    assert hook.bodies()[0]["exit_code"] is None


def test_an_event_whose_sender_died_is_sent_again_by_another(pg, tmp_path, hook) -> None:
    batch_id = _batch(pg, tmp_path, hook)
    _finish(pg, batch_id)
    with pg.begin() as conn:  # a sender claims it, then dies before posting
        (lost,) = notifications.claim(conn, now=db_now(conn), hold=timedelta(seconds=0.5))
    assert Notifier(pg, get_settings()).deliver() == []  # still claimed
    assert hook.bodies() == []
    time.sleep(0.6)
    assert Notifier(pg, get_settings()).deliver() == []
    (body,) = hook.bodies()
    assert body["event_id"] == lost.event_id  # the receiver can tell a repeat
    assert _events(pg) == [("batch.finished", 2, True)]


def test_a_refused_send_is_kept_and_tried_again_later(pg, tmp_path, hook) -> None:
    hook.status = 503
    batch_id = _batch(pg, tmp_path, hook)
    _finish(pg, batch_id)
    (failure,) = Notifier(pg, get_settings()).deliver()
    assert "HTTP 503" in str(failure) and "s3cret" not in str(failure)
    assert len(hook.bodies()) == 3  # 5xx retried within the send
    with pg.begin() as conn:  # the retry time has come
        conn.execute(update(n).values(claimed_until=db_now(conn)))
    hook.status = 204
    assert Notifier(pg, get_settings()).deliver() == []
    assert _events(pg) == [("batch.finished", 2, True)]


def test_a_batch_without_a_url_records_nothing(pg, tmp_path) -> None:
    write_requests(tmp_path / "in.jsonl", 3)
    batch_id = load(pg, tmp_path / "in.jsonl")
    with pg.begin() as conn:
        assert pause_batch(conn, batch_id, "why")
        assert not notifications.record(conn, batch_id, notifications.FINISHED)
    assert _events(pg) == []


def _summary(pg: Engine, batch_id: str) -> dict:
    with pg.connect() as conn:
        batch = reads.resolve_batch(conn, batch_id)
        return dict(batch_summary(conn, batch, expiry_warning=WARNING, stall_after=STALL))


def test_a_batch_with_work_due_and_no_progress_is_stalled_once_per_stall(
    pg, tmp_path, hook
) -> None:
    batch_id = _batch(pg, tmp_path, hook)
    assert _summary(pg, batch_id)["stalled_since"] is None  # just loaded
    with pg.begin() as conn:  # loaded an hour ago, nothing worked it since
        an_hour_ago = db_now(conn) - timedelta(hours=1)
        conn.execute(update(b).where(b.c.id == batch_id).values(created_at=an_hour_ago))
    for _ in range(2):  # two workers' checks
        with pg.begin() as conn:
            notifications.record_stalled(conn, now=db_now(conn), stall_after=STALL)
    assert _summary(pg, batch_id)["stalled_since"] == an_hour_ago.isoformat()
    assert Notifier(pg, get_settings()).deliver() == []
    (stalled,) = hook.bodies()
    assert stalled["event"] == "batch.stalled" and stalled["exit_code"] is None
    assert "nothing has progressed since" in stalled["detail"]

    with pg.begin() as conn:  # a task id comes back: progress
        now = db_now(conn)
        (claim,) = claims.claim_for_submit(conn, now=now, limit=1, lease_seconds=60)
        accepted = Transition(RequestStatus.SUBMITTED, now, {"remote_id": "t", "submitted_at": now})
        apply_transition(
            conn,
            claim.id,
            batch_id=batch_id,
            expected=RequestStatus.SUBMITTING,
            lease_token=claim.lease_token,
            transition=accepted,
        )
    assert _summary(pg, batch_id)["stalled_since"] is None


def test_a_batch_waiting_only_on_future_polls_is_not_stalled(pg, tmp_path, hook) -> None:
    batch_id = _batch(pg, tmp_path, hook)
    with pg.begin() as conn:
        now = db_now(conn)
        conn.execute(
            update(b).where(b.c.id == batch_id).values(created_at=now - timedelta(hours=1))
        )
        conn.execute(
            update(r)
            .where(r.c.batch_id == batch_id)
            .values(status="submitted", remote_id="t", due_at=now + timedelta(minutes=5))
        )
        assert notifications.record_stalled(conn, now=now, stall_after=STALL) == []
    assert _summary(pg, batch_id)["stalled_since"] is None
