"""``load --reuse``: answer a new batch's requests from identical requests that already
succeeded in earlier batches, so a nightly job on mostly unchanged data pays only for changes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, func, select, update

from chatbatch.rules.completions import ANSWER_COLUMNS
from chatbatch.rules.states import RequestStatus
from chatbatch.store.models import requests_table as r

COPIED = ("response", *ANSWER_COLUMNS, "http_status", "remote_id")


def reuse_answers(conn: Connection, batch_id: str, *, now: datetime) -> int:
    """Mark the batch's queued requests ``reused`` where an identical request (same fingerprint)
    succeeded in another batch with an answer that passed its schema, copying the newest such
    answer; returns how many. Usage stays empty: nothing new was paid for."""
    source = r.alias("source")
    newest = (
        select(source.c.fingerprint, func.max(source.c.id).label("id"))
        .where(
            source.c.status == RequestStatus.SUCCEEDED,
            source.c.batch_id != batch_id,
            source.c.schema_valid.is_not(False),
            source.c.fingerprint.in_(
                select(r.c.fingerprint).where(r.c.batch_id == batch_id).scalar_subquery()
            ),
        )
        .group_by(source.c.fingerprint)
        .subquery("newest")
    )
    answer = source.alias("answer")
    found = select(answer).join(newest, answer.c.id == newest.c.id).subquery("found")
    result = conn.execute(
        update(r)
        .where(
            and_(
                r.c.batch_id == batch_id,
                r.c.status == RequestStatus.QUEUED,
                r.c.fingerprint == found.c.fingerprint,
            )
        )
        .values(
            status=RequestStatus.REUSED,
            reused_from=found.c.id,
            completed_at=now,
            due_at=now,
            remote_status="succeed",
            schema_valid=found.c.schema_valid,
            schema_error=found.c.schema_error,
            **{name: found.c[name] for name in COPIED},
        )
    )
    return result.rowcount
