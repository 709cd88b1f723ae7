"""``chatbatch retry``: requeue a batch's finished requests for a fresh round, chosen by state,
by a broken schema (``invalid``) or by disagreement with the gold label (``disagree``). One
transaction with the batch row locked (``controls.lock_batch``); each request's previous outcome
moves to ``past_results``, so usage stays exact and exports show the latest."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, insert, literal, or_, select, update

from chatbatch.errors import ChatbatchError
from chatbatch.operations.controls import CommandResult, lock_batch
from chatbatch.reporting.quality import disagreeing_ids
from chatbatch.rules.completions import USAGE_COLUMNS
from chatbatch.rules.states import (
    ANSWERED_STATUSES,
    ROUND_RESETS,
    TERMINAL_STATUSES,
    BatchStatus,
    RequestStatus,
)
from chatbatch.store import sweeps
from chatbatch.store.models import batches_table as b
from chatbatch.store.models import past_results_table as p
from chatbatch.store.models import requests_table as r

RETRYABLE_DEFAULT = (RequestStatus.FAILED, RequestStatus.EXPIRED)
RETRYABLE = {status.value: status for status in TERMINAL_STATUSES}  # what retry may requeue
RETRY_CHOICES = (*RETRYABLE, "invalid", "disagree")
REQUEUE_BLOCK = 5000  # ids per statement: well inside every driver's limit on parameters
_ARCHIVED = (
    "status",
    "attempts",
    "provider",
    "remote_id",
    "submitted_at",
    "completed_at",
    "http_status",
    "response",
    *USAGE_COLUMNS,
    "usage_clamped",
    "error_code",
    "error_message",
)
_CLEARED = {**ROUND_RESETS, **dict.fromkeys(("error_code", "error_message", "reused_from"))}


@dataclass(frozen=True)
class RetryChoice:
    """What ``retry --status`` asks to requeue: finished states, and the answers that broke
    the schema (``invalid``) or disagree with the gold label (``disagree``)."""

    statuses: tuple[RequestStatus, ...] = ()
    invalid: bool = False
    disagree: bool = False

    def names(self) -> str:
        """``failed,invalid``: the choice as the user wrote it, in a fixed order."""
        flags = [
            name for name, on in (("invalid", self.invalid), ("disagree", self.disagree)) if on
        ]
        return ",".join([*sorted(self.statuses), *flags])


def retry_choice(text: str) -> RetryChoice:
    """``failed, invalid`` → what to requeue. ValueError naming any other word and the
    choices: only finished requests have an outcome to start again from."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    bad = [name for name in names if name not in RETRY_CHOICES]
    if bad or not names:
        given = ", ".join(bad) or "nothing given"
        raise ValueError(f"{given}; choose from {', '.join(RETRY_CHOICES)}")
    statuses = tuple(RETRYABLE[name] for name in names if name in RETRYABLE)
    return RetryChoice(statuses, "invalid" in names, "disagree" in names)


def retry(
    conn: Connection,
    ref: str,
    *,
    now: datetime,
    statuses: Collection[RequestStatus],
    invalid: bool = False,
    disagree: bool = False,
) -> CommandResult:
    """Requeue the batch's requests in ``statuses``, and with ``invalid`` the answers that did
    not follow the schema, with ``disagree`` those whose label differs from the row's gold
    label, for a fresh round (same custom_id, attempts reset)."""
    unknown = set(statuses) - set(TERMINAL_STATUSES)
    if unknown:
        raise ValueError(f"only finished requests can be retried, not {sorted(unknown)}")
    batch = lock_batch(conn, ref)
    choice = RetryChoice(tuple(statuses), invalid, disagree)
    changed = _requeue_chosen(conn, batch, choice, now=now)
    if not changed:
        if sweeps.reopen_unfinished(conn, batch.id):
            message = "reopened: the batch was closed with requests left unfinished"
            return CommandResult(batch.name, BatchStatus.RUNNING, 0, message)
        message = f"nothing to retry: no request is {choice.names()}"
        return CommandResult(batch.name, batch.status, 0, message)
    current = BatchStatus(batch.status)
    if current == BatchStatus.PAUSED:
        message = f"requeued {changed} request(s); the batch is paused, resume it to continue"
        return CommandResult(batch.name, current, changed, message)
    conn.execute(
        update(b)
        .where(b.c.id == batch.id)
        .values(status=BatchStatus.RUNNING, finished_at=None, pause_reason=None, progressed_at=now)
    )
    return CommandResult(batch.name, BatchStatus.RUNNING, changed, f"requeued {changed} request(s)")


def _requeue_chosen(conn: Connection, batch: Any, choice: RetryChoice, *, now: datetime) -> int:
    """Requeue what ``choice`` names: states and broken answers in one statement, rows that
    disagree with gold (found in Python, before any row changes) in blocks of ids."""
    wanted: list[ColumnElement[bool]] = []
    if choice.statuses:
        wanted.append(r.c.status.in_(list(choice.statuses)))
    if choice.invalid:
        wanted.append(r.c.status.in_(ANSWERED_STATUSES) & r.c.schema_valid.is_(False))
    changed = _requeue(conn, batch.id, or_(*wanted), now=now) if wanted else 0
    if choice.disagree:
        if batch.gold_column is None:
            raise ChatbatchError(f"{batch.name} has no gold labels: load it with --gold-column")
        ids = disagreeing_ids(conn, batch)
        for start in range(0, len(ids), REQUEUE_BLOCK):
            block = ids[start : start + REQUEUE_BLOCK]
            changed += _requeue(conn, batch.id, r.c.id.in_(block), now=now)
    return changed


def _requeue(conn: Connection, batch_id: str, which: ColumnElement[bool], *, now: datetime) -> int:
    """Move the outcome of the batch's requests matching ``which`` to ``past_results`` and
    queue them for a new round; how many."""
    chosen = r.c.batch_id == batch_id, which
    archived = select(
        r.c.id,
        r.c.batch_id,
        r.c.retries + 1,
        *(r.c[name] for name in _ARCHIVED),
        literal(now, p.c.archived_at.type),
    ).where(*chosen)
    conn.execute(
        insert(p).from_select(
            ["request_id", "batch_id", "round", *_ARCHIVED, "archived_at"], archived
        )
    )
    result = conn.execute(
        update(r)
        .where(*chosen)
        .values(
            status=RequestStatus.QUEUED,
            due_at=now,
            lease_token=r.c.lease_token + 1,
            worker_id=None,
            attempts=0,
            poll_count=0,
            invalid_retries=0,  # a round the user asked for gets a fresh budget of re-asks
            retries=r.c.retries + 1,
            **_CLEARED,
        )
    )
    return int(result.rowcount)
