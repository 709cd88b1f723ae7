"""All of the answer

requests (and archived_requests): tool_calls, reasoning_content, citations, other_contents (the
content of choices after the first) and choices (how many the answer had), extracted from each
answer as it arrives so that exports drop nothing the model said; batches.max_choices, the
largest ``n`` a request of the batch asks for (its CSV export's content_2 … content_N). The
all_requests view is made again with the new columns. Answers stored before this revision keep
them empty (their raw ``response`` still holds everything).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.views import create_all_requests_view

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TEXTS = ("tool_calls", "reasoning_content", "citations", "other_contents")
TABLES = ("requests", "archived_requests")


def upgrade() -> None:
    op.execute("DROP VIEW all_requests")
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            for name in TEXTS:
                batch.add_column(sa.Column(name, sa.Text(), nullable=True))
            batch.add_column(sa.Column("choices", sa.Integer(), nullable=True))
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("max_choices", sa.Integer(), nullable=True))
    create_all_requests_view()


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("max_choices")
    op.execute("DROP VIEW all_requests")
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            for name in ("choices", *reversed(TEXTS)):
                batch.drop_column(name)
    create_all_requests_view()
