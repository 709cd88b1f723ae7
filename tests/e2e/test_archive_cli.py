"""``chatbatch archive`` through the installed binary on the embedded default (SQLite): the
archived batch exports, lists and shows as before, refuses retry until unarchived, and
``--older-than`` leaves alone what finished too recently or is still running."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from cli_process import BINARY, REPO, base_env, chatbatch

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)

PROMPTS = str(REPO / "examples" / "prompts.jsonl")


def exports(env: dict[str, str], cwd: Path, name: str) -> tuple[bytes, bytes, bytes]:
    """The batch as JSONL and CSV, and one request as ``show`` prints it."""
    chatbatch("export", name, "-o", "out.jsonl", env=env, cwd=cwd)
    chatbatch("export", name, "-o", "out.csv", env=env, cwd=cwd)
    shown = chatbatch("show", name, "review-002", "--json", env=env, cwd=cwd).stdout.encode()
    return (cwd / "out.jsonl").read_bytes(), (cwd / "out.csv").read_bytes(), shown


def test_archive_keeps_exports_and_refuses_changes_until_unarchived(tmp_path) -> None:
    env = base_env(tmp_path / "data")
    chatbatch(
        "run",
        PROMPTS,
        "-o",
        "first.jsonl",
        "--name",
        "nightly",
        "--simulate",
        env=env,
        cwd=tmp_path,
    )
    before = exports(env, tmp_path, "nightly")

    archived = chatbatch("archive", "nightly", env=env, cwd=tmp_path)

    assert archived.stdout == "nightly: archived 14 request(s)\n"
    assert exports(env, tmp_path, "nightly") == before
    assert "completed, archived" in chatbatch("list", env=env, cwd=tmp_path).stdout
    status = orjson.loads(chatbatch("status", "nightly", "--json", env=env, cwd=tmp_path).stdout)
    assert status["archived_at"] and status["counts"]["succeeded"] == 14
    refused = chatbatch(
        "retry", "nightly", "--status", "succeeded", env=env, cwd=tmp_path, check=False
    )
    assert refused.returncode != 0
    assert "nightly is archived; `chatbatch unarchive nightly` first" in refused.stderr

    back = chatbatch("unarchive", "nightly", env=env, cwd=tmp_path)
    assert back.stdout == "nightly: unarchived 14 request(s)\n"
    retried = chatbatch("retry", "nightly", "--status", "succeeded", env=env, cwd=tmp_path)
    assert "requeued 14 request(s)" in retried.stdout


def test_older_than_archives_only_what_finished_long_enough_ago(tmp_path) -> None:
    env = base_env(tmp_path / "data")
    chatbatch(
        "run", PROMPTS, "-o", "a.jsonl", "--name", "done", "--simulate", env=env, cwd=tmp_path
    )
    chatbatch("load", PROMPTS, "--name", "waiting", env=env, cwd=tmp_path)

    recent = chatbatch("archive", "--older-than", "1d", env=env, cwd=tmp_path)
    assert recent.stdout == "nothing to archive: no batch finished more than 1d ago\n"
    now = chatbatch("archive", "--older-than", "0s", "--json", env=env, cwd=tmp_path)
    (only,) = orjson.loads(now.stdout)
    assert (only["name"], only["changed"]) == ("done", 14)

    bad = chatbatch("archive", "--older-than", "a week", env=env, cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "'a week' is not an age" in bad.stderr
    running = chatbatch("archive", "waiting", env=env, cwd=tmp_path, check=False)
    assert running.returncode != 0
    assert "waiting is running with 14 request(s) not finished" in running.stderr
