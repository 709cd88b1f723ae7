"""A fleet: worker liveness and fair share between batches

workers: one row per worker process, with its heartbeat (beat_at). requests.worker_id: the
worker holding the row's claim, so a worker whose beats stop has its rows taken over at once
instead of after the lease. batches.priority: running batches share each model's capacity in
proportion to 1 + priority. Two partial indexes keep both lookups off the finished rows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
    )
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("worker_id", sa.String(40), nullable=True))
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), server_default="0", nullable=False))
    op.create_index(
        "ix_requests_worker_id_held",
        "requests",
        ["worker_id"],
        postgresql_where=sa.text("worker_id IS NOT NULL"),
        sqlite_where=sa.text("worker_id IS NOT NULL"),
    )
    op.create_index(
        "ix_requests_queued_batch_due",
        "requests",
        ["batch_id", "due_at"],
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    )


def downgrade() -> None:
    op.drop_index("ix_requests_queued_batch_due", table_name="requests")
    op.drop_index("ix_requests_worker_id_held", table_name="requests")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("priority")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("worker_id")
    op.drop_table("workers")
