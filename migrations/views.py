"""The ``all_requests`` view (migration 0010 on): ``requests`` and ``archived_requests`` as one.
A revision that changes the columns of ``requests`` makes it again with this, so the view
always lists the columns the table has at that revision (read from the database, not from
today's models)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def create_all_requests_view() -> None:
    """``all_requests`` over both tables, with the columns ``requests`` has now."""
    requests = sa.Table("requests", sa.MetaData(), autoload_with=op.get_bind())
    names = ", ".join(f'"{column.name}"' for column in requests.columns)
    op.execute(
        f"CREATE VIEW all_requests AS SELECT {names} FROM requests "
        f"UNION ALL SELECT {names} FROM archived_requests"
    )
