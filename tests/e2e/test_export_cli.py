"""``chatbatch export`` through the installed binary, on the embedded SQLite default: output
paths refused before any work, ``-o -`` for pipelines, ``--status``, reused answers naming their
source, and a batch that is not finished exported as such."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cli_process import BINARY, base_env, chatbatch

from simulator.hostile import Reply
from simulator.responses import JSON_TYPE

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)
IDS = [f"r{i}" for i in range(6)]
FAILING = {"r1", "r4"}  # their tasks end "failed" (the simulator's script ``fail``)


def failed_task(task_id: str, key: str) -> Reply:
    """A poll's answer for a task the model could not finish."""
    body = {
        "id": task_id,
        "object": "chat.completion",
        "status": "failed",
        "error": {"message": "The model failed to produce an answer", "code": "task_failed"},
    }
    return Reply(200, {"Content-Type": JSON_TYPE}, orjson.dumps(body))


def write_prompts(path: Path) -> None:
    lines = []
    for custom_id in IDS:
        mark = " [[script:fail]]" if custom_id in FAILING else ""
        messages = [{"role": "user", "content": f"label {custom_id}{mark}"}]
        lines.append({"custom_id": custom_id, "model": "gpt-4o-mini", "messages": messages})
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))


@pytest.fixture
def mixed(sim, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Batch ``mixed`` run to its end in ``tmp_path``'s embedded database: four requests
    succeeded, two failed; the environment to run ``chatbatch`` with there."""
    sim.reconfigure(hostile=True)
    sim.script("fail", poll=failed_task)
    env = base_env() | {
        "CHATBATCH_API_BASE": sim.base_url,
        "CHATBATCH_API_KEY": "sk-simulator",
        "CHATBATCH_POLL_FIRST_SECONDS": "0.05",
    }
    write_prompts(tmp_path / "prompts.jsonl")
    try:
        ran = chatbatch(
            "run",
            "prompts.jsonl",
            "-o",
            "first.jsonl",
            "--name",
            "mixed",
            env=env,
            cwd=tmp_path,
            check=False,
        )
        assert ran.returncode == 3, ran.stdout + ran.stderr
        yield env
    finally:
        sim.unscript("fail")


def export(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, bytes, str]:
    """``chatbatch export ARGS`` in ``cwd``: exit code, stdout as bytes, stderr."""
    proc = chatbatch("export", *args, env=env, cwd=cwd, check=False)
    return proc.returncode, proc.stdout.encode(), proc.stderr


@pytest.mark.parametrize("where", ["out", "missing/child.jsonl", "first.jsonl/child.jsonl"])
def test_an_output_that_cannot_be_written_exits_2_naming_it_and_writes_nothing(
    mixed: dict[str, str], tmp_path: Path, where: str
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept").write_text("x")
    before = sorted(tmp_path.rglob("*"))
    code, stdout, stderr = export(mixed, tmp_path, "mixed", "-o", where)
    assert code == 2, stderr
    assert stderr.startswith(f"error: cannot write {where}: ") and "Traceback" not in stderr
    assert stdout == b""
    assert sorted(tmp_path.rglob("*")) == before


def test_dash_streams_the_jsonl_alone_to_stdout(mixed: dict[str, str], tmp_path: Path) -> None:
    code, stdout, stderr = export(mixed, tmp_path, "mixed", "-o", "-")
    assert code == 0, stderr
    assert stdout == (tmp_path / "first.jsonl").read_bytes()  # what run wrote to its file
    lines = [orjson.loads(line) for line in stdout.splitlines()]
    assert [line["custom_id"] for line in lines] == IDS
    assert "wrote 6 result(s) to standard output" in stderr
    assert not (tmp_path / "-").exists()
    code, stdout, _ = export(mixed, tmp_path, "mixed", "-o", "-", "--format", "csv")
    assert code == 0 and stdout.startswith(b"custom_id,status,content")


def test_status_exports_only_those_requests(mixed: dict[str, str], tmp_path: Path) -> None:
    code, stdout, stderr = export(mixed, tmp_path, "mixed", "-o", "-", "--status", "failed")
    assert code == 0, stderr
    lines = [orjson.loads(line) for line in stdout.splitlines()]
    assert [line["custom_id"] for line in lines] == sorted(FAILING)
    assert {line["error"]["code"] for line in lines} == {"task_failed"}
    code, _, stderr = export(mixed, tmp_path, "mixed", "-o", "-", "--status", "failed,lost")
    assert code == 2 and "--status: lost; choose from queued" in stderr


def test_a_reused_answer_names_the_batch_and_custom_id_it_came_from(
    mixed: dict[str, str], tmp_path: Path
) -> None:
    again = chatbatch(
        "run",
        "prompts.jsonl",
        "-o",
        "again.csv",
        "--name",
        "again",
        "--reuse",
        env=mixed,
        cwd=tmp_path,
        check=False,
    )
    assert again.returncode == 3, again.stdout + again.stderr
    code, stdout, stderr = export(mixed, tmp_path, "again", "-o", "-", "--format", "csv")
    assert code == 0, stderr
    table = list(csv.DictReader(io.StringIO(stdout.decode(), newline="")))
    assert [(row["status"], row["reused_from"]) for row in table] == [
        ("failed", "") if custom_id in FAILING else ("reused", f"mixed/{custom_id}")
        for custom_id in IDS
    ]


def test_a_batch_not_finished_is_exported_as_unfinished_with_a_warning(
    mixed: dict[str, str], tmp_path: Path
) -> None:
    loaded = chatbatch("load", "prompts.jsonl", "--name", "later", env=mixed, cwd=tmp_path)
    assert loaded.returncode == 0
    code, stdout, stderr = export(mixed, tmp_path, "later", "-o", "-")
    assert code == 0, stderr
    assert (
        "warning: batch later is still running: 6 of 6 requests are not finished; they are "
        "exported as unfinished"
    ) in stderr
    errors = [orjson.loads(line)["error"] for line in stdout.splitlines()]
    assert errors == [{"code": "unfinished", "message": "not finished yet (status queued)"}] * 6
    code, stdout, stderr = export(mixed, tmp_path, "later", "-o", "-", "--format", "csv")
    table = list(csv.DictReader(io.StringIO(stdout.decode(), newline="")))
    assert {(row["status"], row["error_code"], row["error_message"]) for row in table} == {
        ("queued", "", "")
    }
