"""The installed binary on the embedded default: ``load`` says on stderr how the batch gets
worked, and with ``--json`` stdout is exactly one JSON object, as tooling reads it."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from cli_process import BINARY, base_env, chatbatch, write_prompts

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)


def test_load_on_sqlite_tells_how_to_work_the_batch_and_keeps_json_pure(tmp_path: Path) -> None:
    env = base_env() | {"CHATBATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'chatbatch.db'}"}
    write_prompts(tmp_path / "prompts.jsonl", 4)
    plain = chatbatch("load", str(tmp_path / "prompts.jsonl"), "--name", "first", env=env)
    assert plain.stdout.splitlines() == [plain.stdout.strip()]  # the id alone
    assert plain.stdout.startswith("batch_")
    assert plain.stderr.strip() == (
        "nothing works this batch until you run `chatbatch process first` (or `chatbatch run` "
        "next time, which loads and works in one go)"
    )
    as_json = chatbatch(
        "load", str(tmp_path / "prompts.jsonl"), "--name", "second", "--json", env=env
    )
    loaded = orjson.loads(as_json.stdout)
    assert loaded["name"] == "second" and loaded["total"] == 4
    assert "`chatbatch process second`" in as_json.stderr
