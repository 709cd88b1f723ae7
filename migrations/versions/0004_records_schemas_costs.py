"""Labeling workflows: source records, JSON-schema validation, cost caps, reuse of answers

batches: the CSV header of record files, the JSON schema answers must follow, how often an
invalid answer is asked again, a cost cap, the price table it is measured with, and a count of
the submissions claimed under the cap.
requests: the source record, a fingerprint of the request (to reuse an identical earlier
answer), the schema verdict, and which request a reused answer came from.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("record_columns", sa.Text(), nullable=True))
        batch.add_column(sa.Column("response_schema", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("retry_invalid", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("max_cost", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("prices", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("capped_claims", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("record", sa.Text(), nullable=True))
        batch.add_column(sa.Column("fingerprint", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("schema_valid", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("schema_error", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("invalid_retries", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("reused_from", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_requests_fingerprint_succeeded",
        "requests",
        ["fingerprint"],
        postgresql_where=sa.text("status = 'succeeded'"),
        sqlite_where=sa.text("status = 'succeeded'"),
    )


def downgrade() -> None:
    op.drop_index("ix_requests_fingerprint_succeeded", table_name="requests")
    with op.batch_alter_table("requests") as batch:
        for name in (
            "reused_from",
            "invalid_retries",
            "schema_error",
            "schema_valid",
            "fingerprint",
            "record",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("batches") as batch:
        for name in (
            "capped_claims",
            "prices",
            "max_cost",
            "retry_invalid",
            "response_schema",
            "record_columns",
        ):
            batch.drop_column(name)
