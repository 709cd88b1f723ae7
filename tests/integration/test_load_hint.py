"""``chatbatch load`` on the embedded default says on stderr that nothing works the batch until
a ``chatbatch process`` does; not with a broker or on PostgreSQL (workers take it), and stdout
keeps only the id, or pure JSON with ``--json``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cli_process import write_prompts
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from chatbatch.settings import get_settings
from chatbatch.store.db import get_engine
from cli.main import cli

HINT = (
    "nothing works this batch until you run `chatbatch process labels` (or `chatbatch run` "
    "next time, which loads and works in one go)"
)


@pytest.fixture
def embedded(db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI on a SQLite file, no broker (``db`` clears the environment of CHATBATCH_*)."""
    monkeypatch.setenv("CHATBATCH_DATABASE_URL", f"sqlite:///{tmp_path / 'embedded.db'}")
    get_settings.cache_clear()
    get_engine.cache_clear()
    write_prompts(tmp_path / "prompts.jsonl", 3)
    yield tmp_path / "prompts.jsonl"
    get_engine().dispose()
    get_engine.cache_clear()


def load(path: Path, *options: str) -> Result:
    """``chatbatch load PATH`` (named ``labels`` unless the options say otherwise)."""
    named = options if "--name" in options else ("--name", "labels", *options)
    result = CliRunner().invoke(cli, ["load", str(path), *named])
    assert result.exit_code == 0, result.output
    return result


def test_load_on_the_embedded_default_says_how_to_work_the_batch(embedded: Path) -> None:
    result = load(embedded)
    assert result.stdout.strip().startswith("batch_")
    assert len(result.stdout.splitlines()) == 1  # the id alone, as scripts read it
    assert result.stderr.strip() == HINT


def test_load_json_keeps_stdout_pure_json_and_the_hint_on_stderr(embedded: Path) -> None:
    result = load(embedded, "--json")
    loaded = orjson.loads(result.stdout)  # the whole of stdout is one JSON object
    assert loaded["name"] == "labels" and loaded["total"] == 3
    assert "nothing works" not in result.stdout
    assert result.stderr.strip() == HINT


def test_the_hint_is_for_the_embedded_default_alone(
    embedded: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load(embedded).stderr.strip() == HINT
    monkeypatch.setenv("CHATBATCH_BROKER_URL", "redis://127.0.0.1:6379/0")  # workers take it
    get_settings.cache_clear()
    with_broker = load(embedded, "--name", "with-broker")
    assert with_broker.stdout.strip().startswith("batch_")
    assert with_broker.stderr == ""
    monkeypatch.delenv("CHATBATCH_BROKER_URL")
    monkeypatch.setenv("CHATBATCH_DATABASE_URL", pg_url)  # not embedded: no hint either
    get_settings.cache_clear()
    get_engine().dispose()
    get_engine.cache_clear()
    on_postgresql = load(embedded, "--name", "on-postgresql", "--json")
    assert orjson.loads(on_postgresql.stdout)["total"] == 3
    assert on_postgresql.stderr == ""
