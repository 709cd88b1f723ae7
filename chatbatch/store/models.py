"""Tables: one row per batch, one row per request. PostgreSQL is the source of truth."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar = {datetime: UTCDateTime()}


class UsageColumns:
    """Token usage as the provider reported it (``chatbatch.rules.completions.USAGE_COLUMNS``)."""

    prompt_tokens: Mapped[int | None] = mapped_column(BigInteger)
    completion_tokens: Mapped[int | None] = mapped_column(BigInteger)
    total_tokens: Mapped[int | None] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cached_tokens: Mapped[int | None] = mapped_column(BigInteger)
    billed_units: Mapped[int | None] = mapped_column(BigInteger)
    # A usage number the provider reported out of range (negative, absurdly large) was clamped.
    usage_clamped: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Batch(Base):
    """A loaded file: its name, whether it may run, and why it was paused."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    pause_reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    total: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    # JSON list: the header of a CSV or record file, so exports give the columns back in order.
    record_columns: Mapped[str | None] = mapped_column(Text)
    # JSON Schema (text) every answer must follow; invalid answers are asked again this often.
    response_schema: Mapped[str | None] = mapped_column(Text)
    retry_invalid: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Decimal text: stop submitting before spent + in flight would pass it.
    max_cost: Mapped[str | None] = mapped_column(String(40))
    # The price table (JSON) given at load time: cost caps and status use it.
    prices: Mapped[str | None] = mapped_column(Text)
    # Submissions claimed while capped: with a spend snapshot, bounds what is spent or in flight.
    capped_claims: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Fair share: running batches divide each model's capacity in proportion to 1 + priority.
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Where the batch's events are POSTed (``--notify``), by whichever worker sees them.
    notify_url: Mapped[str | None] = mapped_column(Text)
    # When a request of the batch last got a task id or an answer (every ``PROGRESS_STEP`` at
    # most): a running batch with due work and no progress for a while is stalled.
    progressed_at: Mapped[datetime | None]
    # When ``chatbatch archive`` moved its requests to ``archived_requests`` (None: they are in
    # ``requests``); an archived batch is read-only until ``chatbatch unarchive``.
    archived_at: Mapped[datetime | None]
    # Gold labels (``--gold-column``): the source column of each row's trusted label, the
    # answer field compared with it (None: the whole answer), and whether case counts.
    gold_column: Mapped[str | None] = mapped_column(Text)
    gold_field: Mapped[str | None] = mapped_column(Text)
    gold_case_sensitive: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # The largest ``n`` (answers per request) a request asks for: the CSV export's content_2 …
    max_choices: Mapped[int | None] = mapped_column(Integer)


ACTIVE_ONLY = "status IN ('queued', 'submitting', 'submitted')"


class Request(UsageColumns, Base):
    """One chat-completion request and everything the provider said about it.

    ``due_at`` is the row's single timer: when a queued row may be submitted, when a submitted
    row is next polled, and when a submitting row's lease runs out. ``lease_token`` grows at
    every claim; writes carry the token they claimed with, so a stale worker changes nothing.
    """

    __tablename__ = "requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    line_no: Mapped[int] = mapped_column(Integer)
    # Bytewise on PostgreSQL (migration 0013): a prefix search is a range of the unique index.
    custom_id: Mapped[str] = mapped_column(Text().with_variant(Text(collation="C"), "postgresql"))
    model: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)

    status: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime]
    lease_token: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    ambiguous_submits: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    poll_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Unusable answers to this round's polls in a row (an undocumented status counts 1, an
    # answer we cannot read ``STRIKES_PER_UNUSABLE``); too many and the request fails.
    poll_strikes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    provider: Mapped[str | None] = mapped_column(String(64))  # the one submitted to, by name
    # The worker process holding the row's claim (``workers.id``); cleared by every guarded
    # write, so a row keeps it only while a POST or poll of that worker is in flight.
    worker_id: Mapped[str | None] = mapped_column(String(40))
    remote_id: Mapped[str | None] = mapped_column(Text)
    remote_status: Mapped[str | None] = mapped_column(String(64))
    submitted_at: Mapped[datetime | None]
    polled_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    http_status: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[str | None] = mapped_column(Text)
    content: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(64))
    response_model: Mapped[str | None] = mapped_column(Text)
    # The rest of what the model said (``rules.completions.extract_fields``): the first choice's
    # tool calls (JSON list) and reasoning, the web search's citations (JSON list), and with
    # n > 1 the content of the other choices (JSON list) and how many choices there were.
    tool_calls: Mapped[str | None] = mapped_column(Text)
    reasoning_content: Mapped[str | None] = mapped_column(Text)
    citations: Mapped[str | None] = mapped_column(Text)
    other_contents: Mapped[str | None] = mapped_column(Text)
    choices: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)

    # The source record (JSON object) of a CSV row or record line.
    record: Mapped[str | None] = mapped_column(Text)
    # sha256 of the request as sent (``input.fingerprints``): equal requests, equal answers.
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    # With a batch schema: whether the answer follows it (None until answered), and why not.
    schema_valid: Mapped[bool | None] = mapped_column(Boolean)
    schema_error: Mapped[str | None] = mapped_column(Text)
    invalid_retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A ``reused`` request's answer came from this earlier request (no new call was paid for).
    reused_from: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("batch_id", "custom_id"),
        UniqueConstraint("batch_id", "line_no"),
        # Due work by state: active rows only, so finished ones (most of the table, soon)
        # are not in it (bench.hot_table).
        Index(
            "ix_requests_status_due_at",
            "status",
            "due_at",
            postgresql_where=text(ACTIVE_ONLY),
            sqlite_where=text(ACTIVE_ONLY),
        ),
        # Results about to expire unfetched: found without scanning every row.
        Index(
            "ix_requests_submitted_expires_at",
            "expires_at",
            postgresql_where=text("status = 'submitted'"),
            sqlite_where=text("status = 'submitted'"),
        ),
        # Counts by state, and the dashboard's pages of one state in line order.
        Index("ix_requests_batch_id_status", "batch_id", "status", "line_no"),
        Index(
            "ix_requests_fingerprint_succeeded",
            "fingerprint",
            postgresql_where=text("status = 'succeeded'"),
            sqlite_where=text("status = 'succeeded'"),
        ),
        # Liveness: the rows a lost worker held, found without scanning finished rows.
        Index(
            "ix_requests_worker_id_held",
            "worker_id",
            postgresql_where=text("worker_id IS NOT NULL"),
            sqlite_where=text("worker_id IS NOT NULL"),
        ),
        # Fair share: each running batch's next due rows, queued rows only.
        Index(
            "ix_requests_queued_batch_due",
            "batch_id",
            "due_at",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
    )


class Worker(Base):
    """A worker process (``chatbatch worker``, ``run`` or ``process``) and its heartbeat: rows
    held by a worker whose beats stopped are taken over without waiting for their lease."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # worker, run or process
    started_at: Mapped[datetime]
    beat_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]


class Notification(Base):
    """One event of a batch to POST to its ``notify_url``: recorded once, in the transaction
    that made it happen, then sent by whichever worker claims it (at least once; the receiver
    de-duplicates by ``event_id``)."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(32), unique=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))  # batch.finished, batch.paused, …
    # What makes the event one of a kind: a second worker seeing it records nothing more.
    key: Mapped[str] = mapped_column(String(200))
    detail: Mapped[str | None] = mapped_column(Text)  # e.g. why the batch was paused
    created_at: Mapped[datetime]
    # A sender's claim: until then no other worker sends it (a sender that dies loses it).
    claimed_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sent_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)  # the last failure, the URL never in it

    __table_args__ = (
        UniqueConstraint("batch_id", "key"),
        Index(
            "ix_notifications_unsent",
            "created_at",
            postgresql_where=text("sent_at IS NULL"),
            sqlite_where=text("sent_at IS NULL"),
        ),
    )


class PastResult(UsageColumns, Base):
    """What a request ended with before ``chatbatch retry`` requeued it. Kept so usage totals
    stay exact (the provider billed those attempts too) and the history can be audited."""

    __tablename__ = "past_results"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign key: the request may be in ``requests`` or, archived, in ``archived_requests``.
    request_id: Mapped[int] = mapped_column(BigId)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str | None] = mapped_column(String(64))
    remote_id: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    http_status: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    archived_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_past_results_batch_id", "batch_id"),
        Index("ix_past_results_request_id", "request_id"),
    )


requests_table = cast(Table, Request.__table__)
# The requests of archived batches, moved out of the hot table whole: the same columns.
archived_requests_table = Table(
    "archived_requests",
    Base.metadata,
    *(
        Column(c.name, c.type, nullable=c.nullable, primary_key=c.primary_key, autoincrement=False)
        for c in requests_table.columns
    ),
    ForeignKeyConstraint(["batch_id"], ["batches.id"], ondelete="CASCADE"),
    Index("ix_archived_requests_batch_id_line_no", "batch_id", "line_no", unique=True),
)
# A view of both (migration 0010), for what reads a batch's requests wherever they are:
# exports, reports, status. Its own metadata: no table is created for it.
all_requests_table = Table(
    "all_requests", MetaData(), *(Column(c.name, c.type) for c in requests_table.columns)
)
past_results_table = cast(Table, PastResult.__table__)
batches_table = cast(Table, Batch.__table__)
workers_table = cast(Table, Worker.__table__)
notifications_table = cast(Table, Notification.__table__)
