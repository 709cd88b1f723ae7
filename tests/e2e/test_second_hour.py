"""The second hour, through the installed binary: a bad output path refused before anything is
paid for, results on stdout for a pipeline, the final status as JSON, one request in full, the
batches at a glance, top failure reasons, and deleting a batch."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from cli_process import BINARY, REPO, base_env, chatbatch, write_prompts

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)
EXAMPLES = REPO / "examples"


def env_for(sim, tmp_path: Path) -> dict[str, str]:
    """The embedded default in a data directory of this test's own, against the simulator."""
    return base_env(tmp_path / "data") | {
        "CHATBATCH_API_BASE": sim.base_url,
        "GEEKAI_API_KEY": "sk-simulator",
        "CHATBATCH_POLL_FIRST_SECONDS": "0.1",
    }


def test_a_bad_output_path_is_refused_before_anything_is_loaded(sim, tmp_path) -> None:
    env = env_for(sim, tmp_path)
    write_prompts(tmp_path / "in.jsonl", 3)
    (tmp_path / "out").mkdir()
    for output in ("out", "missing/child.jsonl"):
        proc = chatbatch("run", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / output),
                         env=env, check=False)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert output in proc.stderr and "Traceback" not in proc.stderr
    assert sim.stats()["posts"] == 0
    assert "no batches" in chatbatch("list", env=env).stderr


def test_results_on_stdout_and_the_status_as_json(sim, tmp_path) -> None:
    env = env_for(sim, tmp_path)
    write_prompts(tmp_path / "in.jsonl", 4)
    proc = chatbatch("run", str(tmp_path / "in.jsonl"), "-o", "-", "--name", "piped", env=env)
    lines = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert [line["custom_id"] for line in lines] == [f"id-{i}" for i in range(4)]
    assert "wrote 4 result(s) to standard output" in proc.stderr
    status = chatbatch("process", "piped", "--json", "-o", str(tmp_path / "again.jsonl"), env=env)
    summary = orjson.loads(status.stdout)
    assert summary["name"] == "piped" and summary["counts"]["succeeded"] == 4
    assert summary["failures"] == []


def test_show_list_failures_and_delete(sim, tmp_path) -> None:
    env = env_for(sim, tmp_path)
    sim.reconfigure(fail_rate=1.0)  # every task ends failed at the provider
    run = chatbatch(
        "run", str(EXAMPLES / "prompts.jsonl"), "-o", str(tmp_path / "out.jsonl"),
        "--name", "reviews", "--prices", str(EXAMPLES / "prices.toml"), env=env, check=False,
    )  # fmt: skip
    assert run.returncode == 3, run.stderr
    status = chatbatch("status", "reviews", env=env).stdout
    assert "failures    task_failed × 14" in status
    summary = orjson.loads(chatbatch("status", "reviews", "--json", env=env).stdout)
    assert summary["failures"][0]["code"] == "task_failed"

    sim.reconfigure(fail_rate=0.0)
    chatbatch("retry", "reviews", env=env)
    chatbatch("process", "reviews", env=env)
    detail = orjson.loads(chatbatch("show", "reviews", "review-002", "--json", env=env).stdout)
    assert detail["status"] == "succeeded" and detail["rounds"] == 2
    assert detail["request"]["messages"][1]["content"].startswith("Stopped working")
    assert detail["answer"]["content"] and detail["cost"] is not None
    assert [entry["status"] for entry in detail["history"]] == ["failed"]
    assert detail["history"][0]["error"]["code"] == "task_failed"
    shown = chatbatch("show", "reviews", "review-002", env=env).stdout
    assert "earlier rounds" in shown and "round 1  failed" in shown
    missing = chatbatch("show", "reviews", "nope", env=env, check=False)
    assert missing.returncode == 2 and "no request with custom_id 'nope'" in missing.stderr

    listed = chatbatch("list", env=env).stdout.splitlines()
    assert listed[0].split()[:4] == ["NAME", "STATUS", "PROGRESS", "COST"]
    assert listed[1].startswith("reviews") and "14/14 100%" in listed[1] and "USD" in listed[1]
    usage = chatbatch("usage", "reviews", env=env).stdout  # the price table stored at load
    assert "cost (USD)" in usage

    refused = chatbatch("delete", "reviews", env=env, check=False)  # no terminal, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    chatbatch("delete", "reviews", "--yes", env=env)
    gone = chatbatch("status", "reviews", env=env, check=False)
    assert gone.returncode == 2 and "no batch" in gone.stderr
