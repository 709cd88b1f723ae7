"""Notifications from the fleet

batches.notify_url: where the batch's events are POSTed (``--notify`` on load and run).
batches.progressed_at: when a request of the batch last got a task id or an answer, so a
batch with due work and no progress for a while is found stalled.
notifications: each event (finished, paused, expiring, stalled), recorded once in the
transaction that made it happen, then sent by whichever worker claims it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("notify_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("progressed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "notifications",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("batch_id", sa.String(40), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name="fk_notifications_batch_id_batches",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.UniqueConstraint("event_id", name="uq_notifications_event_id"),
        sa.UniqueConstraint("batch_id", "key", name="uq_notifications_batch_id_key"),
    )
    op.create_index(
        "ix_notifications_unsent",
        "notifications",
        ["created_at"],
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_unsent", table_name="notifications")
    op.drop_table("notifications")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("progressed_at")
        batch.drop_column("notify_url")
