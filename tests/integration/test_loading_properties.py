"""Property: whatever junk a file holds, loading either succeeds whole or refuses whole with a
clear InputError — never a traceback, never a half-loaded batch."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from chatbatch.errors import InputError
from chatbatch.input.loading import load_jsonl
from chatbatch.store.models import batches_table, requests_table

GOOD = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
near_misses = st.fixed_dictionaries(
    {"messages": st.one_of(st.just([{"role": "user", "content": "x"}]), json_values)},
    optional={
        "model": json_values,
        "custom_id": st.one_of(st.text(max_size=5), json_values),
        "stream": json_values,
        "temperature": json_values,
        "body": json_values,
    },
).map(lambda v: json.dumps(v).encode())
lines = st.one_of(
    st.just(GOOD),
    st.binary(max_size=40),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_misses,
)


def count(engine: Engine, table) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=st.lists(lines, min_size=0, max_size=8))
def test_junk_never_half_loads(db: Engine, tmp_path: Path, content: list[bytes]) -> None:
    path = tmp_path / f"{uuid.uuid4().hex}.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in content))
    batches_before = count(db, batches_table)
    requests_before = count(db, requests_table)
    try:
        with db.begin() as conn:
            batch = load_jsonl(conn, path, name=None, default_model=None, max_line_bytes=4096)
    except InputError as exc:
        assert str(path) in str(exc)
        assert count(db, batches_table) == batches_before
        assert count(db, requests_table) == requests_before
        return
    assert batch.total > 0
    assert count(db, requests_table) == requests_before + batch.total
