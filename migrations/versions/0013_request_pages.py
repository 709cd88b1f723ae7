"""Request pages

The dashboard's table of a batch's requests pages by line number (keyset) and filters by status.
``ix_requests_batch_id_status`` gains ``line_no`` as its last column, so a page of one status
is read from the index in order, however rare that status is among a million rows; the counts
by status read the same index as before.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_requests_batch_id_status"


def upgrade() -> None:
    op.drop_index(NAME, table_name="requests")
    op.create_index(NAME, "requests", ["batch_id", "status", "line_no"])


def downgrade() -> None:
    op.drop_index(NAME, table_name="requests")
    op.create_index(NAME, "requests", ["batch_id", "status"])
