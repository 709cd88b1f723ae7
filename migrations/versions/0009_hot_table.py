"""The hot table stays fast as finished rows pile up

requests: ix_requests_status_due_at covers active rows only (queued, submitting, submitted), so
finished rows, soon most of the table, are not in the index every claim and tick walks; a
partial index on expires_at of submitted rows serves the expiry sweep and warning, which
scanned the whole table. On PostgreSQL, autovacuum and autoanalyze of requests start at 2% and
1% of changed rows instead of 20% and 10%: every request is updated several times on its way,
and stale statistics sent the sweeps to sequential scans (bench.hot_table).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE_ONLY = "status IN ('queued', 'submitting', 'submitted')"
AUTOVACUUM = (
    "autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.01, "
    "autovacuum_vacuum_insert_scale_factor = 0.02"
)


def upgrade() -> None:
    op.drop_index("ix_requests_status_due_at", table_name="requests")
    op.create_index(
        "ix_requests_status_due_at",
        "requests",
        ["status", "due_at"],
        postgresql_where=sa.text(ACTIVE_ONLY),
        sqlite_where=sa.text(ACTIVE_ONLY),
    )
    op.create_index(
        "ix_requests_submitted_expires_at",
        "requests",
        ["expires_at"],
        postgresql_where=sa.text("status = 'submitted'"),
        sqlite_where=sa.text("status = 'submitted'"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE requests SET ({AUTOVACUUM})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE requests RESET (autovacuum_vacuum_scale_factor, "
            "autovacuum_analyze_scale_factor, autovacuum_vacuum_insert_scale_factor)"
        )
    op.drop_index("ix_requests_submitted_expires_at", table_name="requests")
    op.drop_index("ix_requests_status_due_at", table_name="requests")
    op.create_index("ix_requests_status_due_at", "requests", ["status", "due_at"])
