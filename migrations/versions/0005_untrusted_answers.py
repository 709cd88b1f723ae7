"""Untrusted provider answers: clamped usage is flagged, unusable poll answers are counted

requests and past_results: usage_clamped, set when a usage number the provider reported was out
of range and stored clamped. requests: poll_strikes, the unusable answers to this round's polls
in a row (a request whose polls keep being answered with garbage fails within its budget
instead of being polled until its result expires).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("requests", "past_results"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("usage_clamped", sa.Boolean(), server_default=sa.false(), nullable=False)
            )
    with op.batch_alter_table("requests") as batch:
        batch.add_column(
            sa.Column("poll_strikes", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("poll_strikes")
    for table in ("requests", "past_results"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("usage_clamped")
