"""requests.retries and past_results: what a request ended with before `chatbatch retry`

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
USAGE = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "billed_units",
)


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("retries", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "past_results",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("request_id", BIG_ID, nullable=False),
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("remote_id", sa.Text(), nullable=True),
        sa.Column("submitted_at", TIMESTAMP, nullable=True),
        sa.Column("completed_at", TIMESTAMP, nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        *(sa.Column(name, sa.BigInteger(), nullable=True) for name in USAGE),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("archived_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_past_results_batch_id_batches"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.id"],
            name=op.f("fk_past_results_request_id_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_past_results")),
    )
    op.create_index("ix_past_results_batch_id", "past_results", ["batch_id"])
    op.create_index("ix_past_results_request_id", "past_results", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_past_results_request_id", table_name="past_results")
    op.drop_index("ix_past_results_batch_id", table_name="past_results")
    op.drop_table("past_results")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("retries")
