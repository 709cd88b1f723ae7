"""Archiving finished batches

archived_requests: the requests of batches ``chatbatch archive`` moved out of the hot requests
table whole (``chatbatch unarchive`` moves them back); the same columns, indexed only to read a
batch in input order. all_requests: a view of both tables, which exports, reports and status
read, so an archived batch reads as before. batches.archived_at: when it was archived.
past_results.request_id no longer references requests, as an archived request's earlier rounds
stay where they are.

A later migration that adds a column to requests adds it to archived_requests as well and
recreates the view: tests/integration/test_migrations.py checks that the three agree.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.views import create_all_requests_view

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    requests = sa.Table("requests", sa.MetaData(), autoload_with=op.get_bind())
    op.create_table(
        "archived_requests",
        *(
            sa.Column(column.name, column.type, nullable=column.nullable, autoincrement=False)
            for column in requests.columns
        ),
        sa.PrimaryKeyConstraint("id", name="pk_archived_requests"),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name="fk_archived_requests_batch_id_batches",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_archived_requests_batch_id_line_no",
        "archived_requests",
        ["batch_id", "line_no"],
        unique=True,
    )
    create_all_requests_view()
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("past_results") as batch:
        batch.drop_constraint("fk_past_results_request_id_requests", type_="foreignkey")


def downgrade() -> None:
    op.execute("DROP VIEW all_requests")
    op.execute("INSERT INTO requests SELECT * FROM archived_requests")  # nothing is lost
    op.drop_index("ix_archived_requests_batch_id_line_no", table_name="archived_requests")
    op.drop_table("archived_requests")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("archived_at")
    with op.batch_alter_table("past_results") as batch:
        batch.create_foreign_key(
            "fk_past_results_request_id_requests",
            "requests",
            ["request_id"],
            ["id"],
            ondelete="CASCADE",
        )
