"""Request pages

The dashboard's table of a batch's requests pages by line number (keyset), filters by status
and searches custom_ids by prefix, each from an index at a million rows:

* ``ix_requests_batch_id_status`` gains ``line_no`` as its last column, so a page of one status
  is read in order from the index however rare that status is; counts by status read the same
  index as before.
* On PostgreSQL ``custom_id`` (in ``requests`` and ``archived_requests``) compares bytewise
  (``COLLATE "C"``), so ``custom_id LIKE 'prefix%'`` is a range of the existing unique index
  on (batch_id, custom_id) whatever the database's locale. Equality, which is all the rest of
  chatbatch asks of a custom_id, is unchanged. The ``all_requests`` view is made again (a
  column a view uses cannot change its type), with the same columns.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

from migrations.views import create_all_requests_view

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_requests_batch_id_status"
TABLES = ("requests", "archived_requests")


def _collate_custom_ids(collation: str) -> None:
    """custom_id compared by ``collation`` in both tables (PostgreSQL only)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP VIEW all_requests")
    for table in TABLES:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN custom_id TYPE text COLLATE "{collation}"')
    create_all_requests_view()


def upgrade() -> None:
    op.drop_index(NAME, table_name="requests")
    op.create_index(NAME, "requests", ["batch_id", "status", "line_no"])
    _collate_custom_ids("C")


def downgrade() -> None:
    _collate_custom_ids("default")
    op.drop_index(NAME, table_name="requests")
    op.create_index(NAME, "requests", ["batch_id", "status"])
