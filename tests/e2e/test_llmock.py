"""Sync mode against llmock (PyPI), an OpenAI-compatible server nobody here wrote: random 500s
and 503s, a quota it does not publish, a permanent error scripted for some requests, and its own
verdict on how a client retries. Two workers, through the installed binary."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from cli_process import BINARY, chatbatch, query_rows, work_with_workers

LLMOCK = shutil.which("llmock", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(
    (BINARY is None or LLMOCK is None) and not os.environ.get("CI"),
    reason="chatbatch and llmock (the dev extras) are not installed",
)

QUOTA_RPM = 300  # llmock's token bucket: 300 at once, then 5 a second; nobody publishes it
REFUSED_MODEL = "llmock-refuses-this"  # a scripted, permanent 400


@pytest.fixture
def llmock(tmp_path: Path) -> Iterator[str]:
    """A llmock server on a free loopback port; its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "llmock.json"
    config.write_text(
        json.dumps({"error_rates": {"500": 0.03, "503": 0.05}, "limits": {"rpm": QUOTA_RPM}})
    )
    assert LLMOCK, "llmock is in the dev extras"
    args = [LLMOCK, "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with (tmp_path / "llmock.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, proc)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_healthy(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "llmock exited at start"
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("llmock did not come up within 30 s")


def write_requests(path: Path, n: int, refused: int) -> None:
    """``n`` distinct requests, the first ``refused`` of them for the model llmock refuses."""
    with path.open("w") as fh:
        for i in range(n):
            model = REFUSED_MODEL if i < refused else "gpt-4o-mini"
            content = f"Label ticket {i}: the printer on floor {i % 7} jams."
            body = {"model": model, "messages": [{"role": "user", "content": content}]}
            fh.write(json.dumps({"custom_id": f"t-{i}", "body": body}) + "\n")


def test_sync_mode_against_llmock_with_faults_and_an_unpublished_quota(
    distributed_env, llmock, tmp_path
) -> None:
    n, refused = 700, 4
    scenario = {"type": "fail", "status": 400, "times": None, "message": "model not allowed"}
    scenario["match"] = {"model": REFUSED_MODEL}
    httpx.post(f"{llmock}/_llmock/scenario", json={"behaviors": [scenario]}).raise_for_status()
    env = distributed_env | {
        "CHATBATCH_API_MODE": "sync",
        "CHATBATCH_API_BASE": f"{llmock}/v1",
        "CHATBATCH_API_KEY": "sk-llmock-e2e-key",
    }
    write_requests(tmp_path / "tickets.jsonl", n, refused)
    chatbatch("db", "upgrade", env=env)
    chatbatch("load", str(tmp_path / "tickets.jsonl"), "--name", "llmock", env=env)
    started = time.monotonic()
    status, worker_logs = work_with_workers(env, "llmock", tmp_path, timeout=300)
    took = time.monotonic() - started
    assert status["status"] == "completed", worker_logs[-3000:]
    assert status["counts"]["succeeded"] == n - refused, status["counts"]
    assert status["counts"]["failed"] == refused

    chatbatch("export", "llmock", "-o", str(tmp_path / "out.jsonl"), env=env)
    lines = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    for line in lines[:refused]:
        assert line["error"]["message"].endswith("model not allowed"), line
    for line in lines[refused:]:
        assert line["response"]["request_id"].startswith("chatcmpl-"), line

    verdict = httpx.get(f"{llmock}/_llmock/verdict").json()
    errors = [f for f in verdict["findings"] if f["severity"] == "error"]
    assert verdict["passed"] and not errors, errors[:5]

    posts = httpx.get(f"{llmock}/_llmock/requests", timeout=30).json()["requests"]
    posts = [p for p in posts if p["method"] == "POST"]
    served = Counter(p["fingerprint"] for p in posts if p["status"] == 200)
    assert sum(served.values()) == n - refused and max(served.values()) == 1  # none twice
    per_request = Counter(p["fingerprint"] for p in posts)
    quota_429s = [p for p in posts if p["fault"] == "ratelimit:requests"]
    first = min(p["started_at"] for p in posts)
    late = [p for p in posts if p["started_at"] >= first + 60]
    late_429s = [p for p in late if p["status"] == 429]
    print(
        f"llmock: {n} requests in {took:.0f} s, {len(posts)} POSTs, {len(quota_429s)} quota "
        f"429s, after the first minute {len(late_429s)} of {len(late)} POSTs answered 429, "
        f"at most {max(per_request.values())} POSTs for one request; "
        f"verdict warnings: {Counter((f['code'], f['path']) for f in verdict['findings'])}"
    )
    assert max(per_request.values()) <= 6  # a few times for a quota, not a storm
    assert len(late) >= 20 and len(late_429s) < 0.05 * len(late)


def test_one_batch_across_two_providers_each_request_to_its_own(
    distributed_env, sim, llmock, tmp_path
) -> None:
    """Our simulator in background mode for one model, llmock in sync mode for another, named
    in a providers file whose keys live in variables of their own; a model neither serves is
    refused at load, naming the line."""
    providers = tmp_path / "providers.toml"
    providers.write_text(
        "[[provider]]\n"
        'name = "sim"\n'
        f'base_url = "{sim.base_url}"\n'
        'key_env = "TEST_SIM_KEY"\n'
        'models = ["sim-*"]\n'
        "\n[[provider]]\n"
        'name = "mock"\n'
        f'base_url = "{llmock}/v1"\n'
        'key_env = "TEST_LLMOCK_KEY"\n'
        'mode = "sync"\n'
        'models = ["gpt-4o-mini"]\n'
    )
    env = {k: v for k, v in distributed_env.items() if k != "GEEKAI_API_KEY"} | {
        "CHATBATCH_PROVIDERS": str(providers),
        "TEST_SIM_KEY": "sk-simulator",
        "TEST_LLMOCK_KEY": "sk-llmock-mixed-key",
    }
    models = {f"r-{i}": "sim-small" if i % 2 else "gpt-4o-mini" for i in range(40)}
    lines = [_request(custom_id, model) for custom_id, model in models.items()]
    (tmp_path / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "unserved.jsonl").write_text(lines[0] + "\n" + _request("x", "claude-3") + "\n")
    chatbatch("db", "upgrade", env=env)

    refused = chatbatch("load", str(tmp_path / "unserved.jsonl"), env=env, check=False)
    assert refused.returncode == 2, refused.stderr
    assert f"{tmp_path / 'unserved.jsonl'}:2: no provider in {providers}" in refused.stderr

    chatbatch("load", str(tmp_path / "mixed.jsonl"), "--name", "mixed", env=env)
    status, _ = work_with_workers(env, "mixed", tmp_path, timeout=120)
    assert status["counts"]["succeeded"] == 40, status["counts"]
    assert status["providers"] == {"mock": 20, "sim": 20}
    shown = chatbatch("status", "mixed", env=env).stdout
    assert "providers   mock 20, sim 20" in shown
    chatbatch("report", "mixed", "-o", str(tmp_path / "report.html"), env=env)
    page = (tmp_path / "report.html").read_text()
    assert '<b data-metric="providers">mock 20 · sim 20</b>' in page

    served = _providers_of(env["CHATBATCH_DATABASE_URL"])
    assert served == {cid: "sim" if m == "sim-small" else "mock" for cid, m in models.items()}
    chatbatch("export", "mixed", "-o", str(tmp_path / "mixed.csv"), env=env)
    with (tmp_path / "mixed.csv").open(newline="") as fh:
        assert {row["custom_id"]: row["provider"] for row in csv.DictReader(fh)} == served
    by_provider = chatbatch("usage", "mixed", "--by", "provider", "--json", env=env).stdout
    assert [row["key"] for row in orjson.loads(by_provider)["rows"]] == ["mock", "sim"]
    assert sim.stats()["accepted"] == 20 and sim.stats()["sync_completions"] == 0
    posts = httpx.get(f"{llmock}/_llmock/requests", timeout=30).json()["requests"]
    answered = [p["body"]["model"] for p in posts if p["method"] == "POST" and p["status"] == 200]
    assert answered == ["gpt-4o-mini"] * 20
    assert not any("background" in (p["body"] or {}) for p in posts)  # sync: none sent


def _request(custom_id: str, model: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": f"Label {custom_id}."}]}
    return json.dumps({"custom_id": custom_id, "body": body})


def _providers_of(url: str) -> dict[str, str]:
    """Each request's custom_id and the provider it was sent to, as stored."""
    return dict(query_rows(url, "SELECT custom_id, provider FROM requests"))
