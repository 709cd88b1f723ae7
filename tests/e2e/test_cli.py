"""The installed ``chatbatch`` binary, driven exactly as a user or other tooling would."""

from __future__ import annotations

import csv
import os

import orjson
import pytest
from cli_process import (
    BINARY,
    REPO,
    base_env,
    chatbatch,
    database_dump,
    start_worker,
    stop,
    wait_finished,
    write_prompts,
)

from simulator.answers import expected_content, expected_usage

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)


def test_two_workers_process_1000_requests_exactly_once(distributed_env, sim, tmp_path) -> None:
    env = distributed_env
    n = 1000
    bodies = write_prompts(tmp_path / "prompts.jsonl", n)
    chatbatch("db", "upgrade", env=env, cwd=tmp_path)
    loaded = orjson.loads(
        chatbatch(
            "load", str(tmp_path / "prompts.jsonl"), "--name", "e2e", "--json", env=env
        ).stdout
    )
    assert loaded["name"] == "e2e" and loaded["total"] == n
    workers = [start_worker(env, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        status = wait_finished(env, "e2e")
    finally:
        for proc in workers:
            stop(proc)
    logs = "".join((tmp_path / f"worker{i}.log").read_text() for i in range(2))
    assert status["status"] == "completed", logs
    assert status["counts"]["succeeded"] == n
    assert status["id"] == loaded["id"]
    assert status["possible_duplicates"] == 0
    for key in ("prompt_tokens", "completion_tokens", "total_tokens", "billed_units"):
        assert status["usage"][key] == sum(expected_usage(b)[key] for b in bodies), key
    assert status["usage"]["cached_tokens"] == sum(
        expected_usage(b)["prompt_tokens_details"]["cached_tokens"] for b in bodies
    )

    stats = sim.stats()
    assert stats["accepted"] == n
    assert stats["duplicate_fingerprints"] == []
    assert len(stats["accepted_by_fingerprint"]) == n

    chatbatch("export", "e2e", "-o", str(tmp_path / "out.jsonl"), env=env)
    lines = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [x["custom_id"] for x in lines] == [f"id-{i}" for i in range(n)]
    for body, line in zip(bodies, lines, strict=True):
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["response"]["body"]["choices"][0]["message"]["content"] == expected_content(
            body
        )

    chatbatch("export", "e2e", "-o", str(tmp_path / "out.csv"), "--format", "csv", env=env)
    with (tmp_path / "out.csv").open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == n
    assert table[5]["custom_id"] == "id-5" and table[5]["status"] == "succeeded"
    assert table[5]["content"] == expected_content(bodies[5])
    assert int(table[5]["total_tokens"]) == expected_usage(bodies[5])["total_tokens"]

    listed = orjson.loads(chatbatch("list", "--json", env=env).stdout)
    assert [b["name"] for b in listed] == ["e2e"]
    assert "e2e" in chatbatch("status", "e2e", env=env).stdout

    secret = env["GEEKAI_API_KEY"]
    assert secret not in logs
    assert secret not in (tmp_path / "out.jsonl").read_text()
    assert secret not in (tmp_path / "out.csv").read_text()
    assert secret not in database_dump(env["CHATBATCH_DATABASE_URL"])


def test_bad_file_is_refused_with_file_and_line(distributed_env, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model": "m", "messages": [{"role": "user", "content": "hi"}]}\n{oops\n')
    chatbatch("db", "upgrade", env=distributed_env)
    proc = chatbatch("load", str(bad), env=distributed_env, check=False)
    assert proc.returncode != 0
    assert f"{bad}:2: invalid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    listed = orjson.loads(chatbatch("list", "--json", env=distributed_env).stdout)
    assert listed == []


def test_embedded_run_needs_nothing_configured(tmp_path) -> None:
    proc = chatbatch(
        "run",
        str(REPO / "examples" / "prompts.jsonl"),
        "-o",
        "results.jsonl",
        "--simulate",
        env=base_env(tmp_path),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = (tmp_path / "results.jsonl").read_bytes().splitlines()
    assert len(lines) == 14
    assert all(orjson.loads(x)["error"] is None for x in lines)
    assert (tmp_path / "chatbatch" / "chatbatch.db").exists()  # $XDG_DATA_HOME/chatbatch
    assert not (tmp_path / "chatbatch.db").exists()
    again = chatbatch(
        "status",
        orjson.loads(lines[0])["custom_id"],
        env=base_env(tmp_path),
        cwd=tmp_path,
        check=False,
    )
    assert again.returncode != 0 and "no batch" in again.stderr


@pytest.mark.parametrize(
    ("key", "faults", "exit_code", "says"),
    [
        ("sk-simulator", {}, 0, "succeeded 14"),
        ("sk-simulator", {"fail_rate": 1.0}, 3, "failed 14"),
        ("sk-wrong", {}, 4, "provider answered 401"),
    ],
)
def test_run_exit_codes_tell_cron_what_happened(sim, tmp_path, key, faults, exit_code, says):
    sim.reconfigure(**faults)
    env = base_env(tmp_path) | {
        "CHATBATCH_API_BASE": sim.base_url,
        "CHATBATCH_API_KEY": key,
        "CHATBATCH_POLL_FIRST_SECONDS": "0.05",
    }
    proc = chatbatch(
        "run",
        str(REPO / "examples" / "prompts.jsonl"),
        "-o",
        "out.csv",
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == exit_code, proc.stdout + proc.stderr
    assert says in proc.stdout
    assert key not in proc.stdout + proc.stderr
    assert (tmp_path / "out.csv").read_text().startswith("custom_id,status,content")


def test_operator_commands_are_safe_to_run_twice(distributed_env, tmp_path) -> None:
    env = distributed_env
    write_prompts(tmp_path / "prompts.jsonl", 5)
    chatbatch("db", "upgrade", env=env)
    chatbatch("load", str(tmp_path / "prompts.jsonl"), "--name", "ops", env=env)

    def control(*args: str) -> dict:
        return orjson.loads(chatbatch(*args, "ops", "--json", env=env).stdout)

    assert control("resume")["message"] == "not paused (the batch is running)"
    first = control("cancel")
    assert (first["status"], first["changed"]) == ("cancelled", 5)
    assert control("cancel")["message"] == "nothing to cancel: the batch is cancelled"
    assert "cancelled 5" in chatbatch("status", "ops", env=env).stdout

    assert control("retry")["message"] == "nothing to retry: no request is expired,failed"
    requeued = chatbatch("retry", "ops", "--status", "cancelled", env=env).stdout
    assert requeued.strip() == "ops: requeued 5 request(s)"
    assert control("retry", "--status", "cancelled")["changed"] == 0
    status = orjson.loads(chatbatch("status", "ops", "--json", env=env).stdout)
    assert status["status"] == "running" and status["counts"]["queued"] == 5

    bad = chatbatch("retry", "ops", "--status", "queued", env=env, check=False)
    assert bad.returncode == 2 and "choose from succeeded, failed, expired, cancelled" in bad.stderr
    missing = chatbatch("cancel", "nope", env=env, check=False)
    assert missing.returncode != 0 and "no batch with id or name 'nope'" in missing.stderr


GOOD_LINE = b'{"custom_id": "a", "model": "m", "messages": [{"role": "user", "content": "hi"}]}'
BAD_INPUTS = {
    "malformed JSON": (GOOD_LINE + b"\n{oops\n", ":2: invalid JSON"),
    "wrong types": (b'{"model": 5, "messages": "hi"}\n', ":1: "),
    "empty file": (b"", "no requests"),
    "whitespace only": (b"\n   \n\t\n", "no requests"),
    "invalid UTF-8": (GOOD_LINE + b"\n" + GOOD_LINE.replace(b"hi", b"h\xff") + b"\n", ":2: "),
    "duplicate custom_id": (GOOD_LINE + b"\n" + GOOD_LINE + b"\n", ":2: duplicate custom_id 'a'"),
    "line over the limit": (
        GOOD_LINE + b"\n" + GOOD_LINE.replace(b"hi", b"x" * 2000) + b"\n",
        ":2: line is longer than",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_naming_file_and_line(distributed_env, tmp_path, case) -> None:
    content, says = BAD_INPUTS[case]
    env = distributed_env | {"CHATBATCH_MAX_LINE_BYTES": "1024"}
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    chatbatch("db", "upgrade", env=env)
    proc = chatbatch("load", str(path), env=env, check=False)
    assert proc.returncode != 0
    assert str(path) in proc.stderr and says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert orjson.loads(chatbatch("list", "--json", env=env).stdout) == []


def test_bom_and_crlf_are_accepted_and_missing_file_or_taken_name_refused(
    distributed_env, tmp_path
) -> None:
    env = distributed_env
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_LINE + b"\r\n" + GOOD_LINE.replace(b'"a"', b'"b"'))
    chatbatch("db", "upgrade", env=env)
    chatbatch("load", str(path), "--name", "taken", env=env)
    again = chatbatch("load", str(path), "--name", "taken", env=env, check=False)
    assert again.returncode != 0 and "'taken' already exists" in again.stderr
    missing = chatbatch("load", str(tmp_path / "nope.jsonl"), env=env, check=False)
    assert missing.returncode != 0 and f"{tmp_path / 'nope.jsonl'}" in missing.stderr
    listed = orjson.loads(chatbatch("list", "--json", env=env).stdout)
    assert [(b["name"], b["total"]) for b in listed] == [("taken", 2)]


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        (
            {"CHATBATCH_CONCURRENCY": "abc"},
            "CHATBATCH_CONCURRENCY: Input should be a valid integer",
        ),
        ({"CHATBATCH_LEASE_SECONDS": "5"}, "CHATBATCH_LEASE_SECONDS (5.0) must exceed"),
    ],
)
@pytest.mark.parametrize("command", [("db", "upgrade"), ("status", "x"), ("cancel", "x")])
def test_bad_settings_exit_2_with_one_readable_line(tmp_path, setting, says, command) -> None:
    proc = chatbatch(*command, env=base_env(tmp_path) | setting, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: bad configuration: ") and says in proc.stderr
    assert "Traceback" not in proc.stderr


def test_embedded_batch_paused_then_resumed_and_retried_with_process(sim, tmp_path) -> None:
    """On the SQLite default there are no workers: ``process`` continues a batch after
    ``resume`` or ``retry``, and every step's exit code tells cron what happened."""
    prompts = str(REPO / "examples" / "prompts.jsonl")
    env = base_env(tmp_path) | {
        "CHATBATCH_API_BASE": sim.base_url,
        "CHATBATCH_API_KEY": "sk-expired",
        "CHATBATCH_POLL_FIRST_SECONDS": "0.05",
    }
    paused = chatbatch(
        "run", prompts, "-o", "out.jsonl", "--name", "nightly", env=env, cwd=tmp_path, check=False
    )
    assert paused.returncode == 4, paused.stdout + paused.stderr
    still = chatbatch("process", "nightly", env=env, cwd=tmp_path, check=False)
    assert still.returncode == 4 and "chatbatch resume nightly" in still.stderr

    env["CHATBATCH_API_KEY"] = "sk-simulator"
    resumed = chatbatch("resume", "nightly", env=env, cwd=tmp_path)
    assert "chatbatch process nightly" in resumed.stderr
    done = chatbatch("process", "nightly", "-o", "out.jsonl", env=env, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert len(lines) == 14 and all(x["error"] is None for x in lines)

    def status() -> dict:
        return orjson.loads(chatbatch("status", "nightly", "--json", env=env, cwd=tmp_path).stdout)

    first = status()["usage"]
    assert first["total_tokens"] > 0
    chatbatch("retry", "nightly", "--status", "succeeded", env=env, cwd=tmp_path)
    again = chatbatch("process", "nightly", env=env, cwd=tmp_path, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    final = status()
    assert final["counts"]["succeeded"] == 14 and final["status"] == "completed"
    assert sim.stats()["accepted"] == 28
    assert final["usage"] == {k: 2 * v for k, v in first.items()}
