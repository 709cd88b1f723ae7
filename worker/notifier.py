"""Sending a batch's recorded events (``chatbatch.store.notifications``) to its webhook.

Any worker's housekeeping sends what is due; ``run`` and ``process`` send their own batch's
events once it has ended, adding where the results were written. The body is the batch's status
object with ``event``, ``event_id`` (one per event: a receiver de-duplicates on it, since a
sender that dies mid-send has the event sent again by another), ``exit_code`` and ``output``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine as DbEngine

from chatbatch.reporting.summary import BatchSummary, batch_summary, exit_code
from chatbatch.rules.states import BatchStatus
from chatbatch.settings import Settings
from chatbatch.store import notifications, reads
from chatbatch.store.db import db_now
from worker.webhooks import DEADLINE_SECONDS, post_json, redacted

STILL_WORKED = (BatchStatus.RUNNING, BatchStatus.CANCELLING)
HOLD = timedelta(seconds=2 * DEADLINE_SECONDS)  # a sender's claim: longer than any one send
RETRY_AFTER = timedelta(seconds=60)  # a failed send is tried again this much later


def notification(
    summary: BatchSummary,
    *,
    event: str = notifications.FINISHED,
    event_id: str | None = None,
    detail: str | None = None,
    output: str | None = None,
) -> dict[str, Any]:
    """The JSON body sent: the batch's status object plus the event, how the batch ended if it
    has (``exit_code``, as ``run`` exits; null while it is worked), and where its results went."""
    body: dict[str, Any] = {
        "event": event,
        "event_id": event_id,
        "exit_code": None if summary["status"] in STILL_WORKED else exit_code(summary),
        "output": output,
    }
    if detail is not None:
        body["detail"] = detail
    return body | dict(summary)


@dataclass(frozen=True)
class Failure:
    """An event that could not be sent this time (it is tried again later)."""

    url: str  # the webhook, with its token: show it only through ``redacted``
    event: str
    problem: str

    def __str__(self) -> str:
        return f"could not notify {redacted(self.url)} of {self.event}: {self.problem}"


class Notifier:
    """Claims due events, POSTs each, and records how it went."""

    def __init__(self, db: DbEngine, settings: Settings) -> None:
        self._db = db
        self._warning = timedelta(seconds=settings.expiry_warning_seconds)
        self._stall_after = timedelta(seconds=settings.stall_seconds)

    def deliver(self, *, batch_id: str | None = None, output: str | None = None) -> list[Failure]:
        """Send the due events (of one batch, if given); those that failed."""
        with self._db.begin() as conn:
            due = notifications.claim(conn, now=db_now(conn), hold=HOLD, batch_id=batch_id)
        failures = [self._send(pending, output) for pending in due]
        return [failure for failure in failures if failure is not None]

    def _send(self, pending: notifications.Pending, output: str | None) -> Failure | None:
        with self._db.connect() as conn:
            batch = reads.resolve_batch(conn, pending.batch_id)
            summary = batch_summary(
                conn, batch, expiry_warning=self._warning, stall_after=self._stall_after
            )
        body = notification(
            summary,
            event=pending.event,
            event_id=pending.event_id,
            detail=pending.detail,
            output=output,
        )
        problem = post_json(pending.url, body)
        with self._db.begin() as conn:
            now = db_now(conn)
            if problem is None:
                notifications.mark_sent(conn, pending.id, now=now)
            else:
                notifications.mark_failed(
                    conn, pending.id, error=problem, retry_at=now + RETRY_AFTER
                )
        return None if problem is None else Failure(pending.url, pending.event, problem)
