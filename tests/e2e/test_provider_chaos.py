"""Two real workers against a provider that misbehaves in every way the simulator knows, at once.

The four promises must hold: every request finishes with a reason, resubmissions happen only
where an answer was lost and are counted, usage equals what the provider returned for the
results we kept, and the API key appears nowhere.
"""

from __future__ import annotations

import os
import time

import orjson
import pytest
from cli_process import (
    BINARY,
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

CHAOS = {
    "latency": "lognormal:0.4,0.8",
    "rate_429": 0.08,
    "retry_after": 0.5,
    "rate_500": 0.03,
    "rate_503": 0.03,
    "drop_rate": 0.03,
    "lost_response_rate": 0.03,
    "slow_rate": 0.02,
    "slow_seconds": 4.0,
    "not_found_seconds": 1.0,
    "fail_rate": 0.05,
    "unknown_status_rate": 0.1,
    "blank_lines": 2,
    "nul_rate": 0.05,
}
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens", "billed_units")


def test_provider_chaos_keeps_every_promise(distributed_env, sim, tmp_path) -> None:
    sim.reconfigure(**CHAOS)
    env = distributed_env | {
        "CHATBATCH_MAX_ATTEMPTS": "12",
        "CHATBATCH_RETRY_BASE_SECONDS": "0.05",
        "CHATBATCH_RETRY_MAX_SECONDS": "0.5",
        "CHATBATCH_CONNECT_TIMEOUT": "1",
        "CHATBATCH_READ_TIMEOUT": "2",
        "CHATBATCH_LEASE_SECONDS": "15",
        # polls sooner than the simulator's 1 s "not found yet" window, so 404s are exercised
        "CHATBATCH_POLL_FIRST_SECONDS": "0.3",
    }
    n = 300
    bodies = write_prompts(tmp_path / "prompts.jsonl", n)
    chatbatch("db", "upgrade", env=env)
    chatbatch("load", str(tmp_path / "prompts.jsonl"), "--name", "chaos", env=env)
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    workers = [start_worker(env, log) for log in logs]
    try:
        deadline = time.monotonic() + 60
        while sim.stats()["rejected"]["429"] < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        sim.reconfigure(retry_after=None)  # the second half of the storm names no delay
        status = wait_finished(env, "chaos", timeout=240)
    finally:
        for proc in workers:
            stop(proc)
    worker_logs = "".join(log.read_text() for log in logs)
    assert status["status"] == "completed", worker_logs[-3000:]

    chatbatch("export", "chaos", "-o", str(tmp_path / "out.jsonl"), env=env)
    lines = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [x["custom_id"] for x in lines] == [f"id-{i}" for i in range(n)]
    kept = []
    for body, line in zip(bodies, lines, strict=True):
        if line["error"] is None:
            content = line["response"]["body"]["choices"][0]["message"]["content"]
            assert content.rstrip("\x00") == expected_content(body)
            kept.append(body)
        else:  # only the provider's own task failures may end a request here
            assert line["error"]["code"] and line["error"]["message"]
            assert "gave up" not in line["error"]["message"], line
    counts = status["counts"]
    assert counts["succeeded"] == len(kept) and counts["failed"] == n - len(kept)
    assert counts["failed"] <= sim.stats()["statuses_served"]["failed"]
    assert sum(counts[s] for s in ("queued", "submitting", "submitted")) == 0

    expected = {k: sum(expected_usage(b)[k] for b in kept) for k in USAGE_KEYS}
    assert {k: status["usage"][k] for k in USAGE_KEYS} == expected

    stats = sim.stats()
    resubmitted = sum(c - 1 for c in stats["accepted_by_fingerprint"].values())
    assert len(stats["accepted_by_fingerprint"]) == n
    assert resubmitted <= status["possible_duplicates"]
    for fault in ("429", "500", "503", "dropped", "lost_response", "404"):
        assert stats["rejected"][fault] > 0, (fault, stats["rejected"])
    assert any(
        "\x00" in x["response"]["body"]["choices"][0]["message"]["content"]
        for x in lines
        if x["error"] is None
    )

    secret = env["GEEKAI_API_KEY"]
    assert secret not in worker_logs
    assert secret not in (tmp_path / "out.jsonl").read_text()
    assert secret not in database_dump(env["CHATBATCH_DATABASE_URL"])
