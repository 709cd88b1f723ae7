"""Where is my data? The embedded default lives in the user's data directory, so every command
finds the same batches from any directory; ``config`` says what is in force (secrets masked);
a batch that is not found names the database looked in; bad arguments exit 2.

Every test points XDG_DATA_HOME at its own directory: the real user's data is never touched."""

from __future__ import annotations

import importlib.metadata
import os
import uuid
from pathlib import Path

import orjson
import pytest
from cli_process import BINARY, REPO, base_env, chatbatch

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)

PROMPTS = str(REPO / "examples" / "prompts.jsonl")
STALE_NOTICE = "./chatbatch.db is not used any more"


def places(tmp_path: Path) -> tuple[dict[str, str], Path, Path, Path]:
    """The environment, the default database it implies, and two working directories."""
    data = tmp_path / "data"
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    return base_env(data), data / "chatbatch" / "chatbatch.db", first, second


def test_a_batch_run_in_one_directory_is_found_from_another(tmp_path) -> None:
    env, database, first, second = places(tmp_path)
    ran = chatbatch(
        "run", PROMPTS, "-o", "out.jsonl", "--name", "nightly", "--simulate",
        env=env, cwd=first, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert database.is_file()
    assert not (first / "chatbatch.db").exists()

    listed = chatbatch("list", env=env, cwd=second)
    assert "nightly" in listed.stdout
    status = orjson.loads(chatbatch("status", "nightly", "--json", env=env, cwd=second).stdout)
    assert (status["status"], status["total"]) == ("completed", 14)
    assert not (second / "chatbatch.db").exists()
    assert STALE_NOTICE not in ran.stderr + listed.stderr


def test_a_batch_not_found_names_the_database(tmp_path) -> None:
    env, database, first, _ = places(tmp_path)
    proc = chatbatch("status", "nosuch", env=env, cwd=first, check=False)
    assert proc.returncode == 2
    assert f"no batch with id or name 'nosuch' in sqlite:///{database}" in proc.stderr

    explicit = env | {"CHATBATCH_DATABASE_URL": "sqlite:///here.db"}
    proc = chatbatch("cancel", "nosuch", env=explicit, cwd=first, check=False)
    assert proc.returncode == 2
    assert "no batch with id or name 'nosuch' in sqlite:///here.db" in proc.stderr


def test_a_local_database_left_from_before_is_noticed_once_per_command(tmp_path) -> None:
    env, database, first, _ = places(tmp_path)
    kept = env | {"CHATBATCH_DATABASE_URL": "sqlite:///chatbatch.db"}
    chatbatch("run", PROMPTS, "-o", "out.jsonl", "--name", "old", "--simulate", env=kept, cwd=first)

    # run opens the database twice (to load, to work the batch): still one notice.
    ran = chatbatch("run", PROMPTS, "-o", "new.jsonl", "--simulate", env=env, cwd=first)
    assert ran.stderr.count(STALE_NOTICE) == 1, ran.stderr
    assert f"the default database is now {database}" in ran.stderr
    assert "set CHATBATCH_DATABASE_URL=sqlite:///chatbatch.db to keep using it" in ran.stderr
    assert STALE_NOTICE in chatbatch("list", env=env, cwd=first).stderr

    listed = chatbatch("list", env=kept, cwd=first)
    assert "old" in listed.stdout and STALE_NOTICE not in listed.stderr


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("sk-" + "k" * 37 + "XYZ", "set (sk-…XYZ, 43 chars)"),
        ("sk-short1", "set"),
    ],
)
def test_config_shows_the_settings_in_force_but_never_the_key(tmp_path, key, shown) -> None:
    env, database, first, _ = places(tmp_path)
    (first / ".env").write_text("CHATBATCH_QUEUE=from-dotenv\nCHATBATCH_CONCURRENCY=3\n")
    env |= {
        "CHATBATCH_API_KEY": key,
        "CHATBATCH_CONCURRENCY": "5",
        "CHATBATCH_BROKER_URL": "redis://:broker-secret@127.0.0.1:6379/0",
    }
    text = chatbatch("config", env=env, cwd=first)
    as_json = chatbatch("info", "--json", env=env, cwd=first)
    for proc in (text, as_json):
        assert key not in proc.stdout + proc.stderr
        assert "broker-secret" not in proc.stdout + proc.stderr
    assert f"api key:   {shown}\n" in text.stdout
    assert f"sqlite:///{database} (embedded SQLite" in text.stdout

    report = orjson.loads(as_json.stdout)
    assert report["database_url"] == f"sqlite:///{database}" and report["embedded"] is True
    assert report["data_dir"] == str(database.parent)
    assert report["broker_url"] == "redis://:***@127.0.0.1:6379/0"
    assert report["api_key"] == shown and report["env_file"] == str(first / ".env")
    settings = report["settings"]
    assert settings["CHATBATCH_QUEUE"] == {"value": "from-dotenv", "source": ".env"}
    assert settings["CHATBATCH_CONCURRENCY"] == {"value": 5, "source": "environment"}
    assert settings["CHATBATCH_CHUNK_SIZE"] == {"value": 64, "source": "default"}
    assert settings["CHATBATCH_API_KEY"] == {"value": shown, "source": "environment"}
    assert settings["CHATBATCH_DATABASE_URL"]["source"] == "default"
    assert not database.parent.exists()  # config opens no database


def test_a_key_in_dotenv_is_read_and_not_shown(tmp_path) -> None:
    env, _, first, _ = places(tmp_path)
    key = f"sk-{uuid.uuid4().hex}"
    (first / ".env").write_text(f"GEEKAI_API_KEY={key}\n")
    proc = chatbatch("config", "--json", env=env, cwd=first)
    assert key not in proc.stdout + proc.stderr
    report = orjson.loads(proc.stdout)
    assert report["api_key"] == f"set (sk-…{key[-3:]}, {len(key)} chars)"
    assert report["settings"]["CHATBATCH_API_KEY"]["source"] == ".env"


def test_a_missing_file_or_a_taken_name_exits_2_naming_it(tmp_path) -> None:
    env, database, first, _ = places(tmp_path)
    for command in (("load",), ("run", "-o", "out.jsonl", "--simulate")):
        proc = chatbatch(*command[:1], "nope.jsonl", *command[1:], env=env, cwd=first, check=False)
        assert proc.returncode == 2, proc.stderr
        assert "nope.jsonl: no such file" in proc.stderr
    assert not database.exists()  # refused before any database was opened

    batch_id = chatbatch("load", PROMPTS, "--name", "taken", env=env, cwd=first).stdout.strip()
    refused = {
        "taken": "a batch named 'taken' already exists",
        batch_id: "looks like a batch id",
        f"batch_{uuid.uuid4().hex}": "looks like a batch id",
    }
    for name, says in refused.items():
        for command in (("load",), ("run", "-o", "out.jsonl", "--simulate")):
            proc = chatbatch(
                *command[:1], PROMPTS, *command[1:], "--name", name,
                env=env, cwd=first, check=False,
            )  # fmt: skip
            assert proc.returncode == 2, proc.stderr
            assert says in proc.stderr and repr(name) in proc.stderr
    listed = orjson.loads(chatbatch("list", "--json", env=env, cwd=first).stdout)
    assert [b["name"] for b in listed] == ["taken"]


def test_version_prints_the_package_version(tmp_path) -> None:
    proc = chatbatch("--version", env=base_env(tmp_path), cwd=tmp_path)
    assert proc.stdout == f"chatbatch {importlib.metadata.version('chatbatch')}\n"
