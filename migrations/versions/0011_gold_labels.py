"""Gold labels

batches.gold_column: the source column holding each row's trusted label (``--gold-column``);
batches.gold_field: the answer field compared with it (None: the whole answer);
batches.gold_case_sensitive: whether letter case counts when comparing.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("gold_column", sa.Text(), nullable=True))
        batch.add_column(sa.Column("gold_field", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column(
                "gold_case_sensitive", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("gold_case_sensitive")
        batch.drop_column("gold_field")
        batch.drop_column("gold_column")
