"""Several providers: which one a request was sent to

requests and past_results: provider, the name (from the providers file, or "default") of the
provider a submission went to. Polls go to the provider that accepted the task, and status,
usage and the exports show it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("requests", "past_results"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("provider", sa.String(64), nullable=True))


def downgrade() -> None:
    for table in ("requests", "past_results"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("provider")
