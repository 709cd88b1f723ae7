"""Engine settings that protect the other workers from a frozen one."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from chatbatch.store.db import is_transient, make_engine


def test_a_session_idle_in_a_transaction_is_ended_and_its_locks_freed(pg_url: str) -> None:
    frozen = make_engine(pg_url, pool_size=1, idle_in_transaction_seconds=0.5)
    other = make_engine(pg_url, pool_size=1)
    try:
        with other.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS lock_probe (id int PRIMARY KEY)"))
            conn.execute(text("INSERT INTO lock_probe VALUES (1) ON CONFLICT DO NOTHING"))
        stuck = frozen.connect()
        stuck.begin()
        stuck.execute(text("SELECT id FROM lock_probe FOR UPDATE"))
        skip = text("SELECT id FROM lock_probe FOR UPDATE SKIP LOCKED")
        with other.begin() as conn:
            assert conn.execute(skip).all() == []  # locked while the session is alive
        time.sleep(1.5)  # the holder "freezes" past the timeout
        with other.begin() as conn:
            assert conn.execute(skip).scalars().all() == [1]
        with pytest.raises(DBAPIError, match="idle-in-transaction timeout") as woken:
            stuck.execute(text("SELECT 1"))
        assert is_transient(woken.value)
        stuck.close()
    finally:
        with other.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS lock_probe"))
        frozen.dispose()
        other.dispose()
