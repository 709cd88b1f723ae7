"""Two real workers against a hostile provider: a few hundred ordinary requests mixed with a few
of every poison the simulator knows (answers in the wrong units, NULs and escapes, the key echoed
back, endless Retry-After, bodies past the size cap, garbage). The batch finishes without
stalling, every neighbour of a poison request is billed once with exact usage, the key is
nowhere, and no worker swells."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from cli_process import BINARY, chatbatch, start_worker, stop, wait_finished
from hostile_checks import (
    assert_all_finished,
    assert_key_nowhere,
    assert_neighbours_billed_once,
    assert_no_key,
)

from chatbatch.store.db import make_engine
from simulator.hostile import KINDS

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)
NORMAL = 300
PER_KIND = 2
PEAK_RSS_MB = 450  # a worker idles at ~120 MB; each answer past the cap costs it at most 32 MiB


def peak_rss_mb(pid: int) -> float:
    """The process's high-water resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def write_batch(path: Path) -> dict[str, dict]:
    """The input file; returns the ordinary requests' bodies by custom_id."""
    normal, lines = {}, []
    for i in range(NORMAL):
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"plain {i}"}]}
        normal[f"n{i}"] = body
        lines.append({"custom_id": f"n{i}", "body": body})
    for kind in KINDS:
        for copy in range(PER_KIND):
            text = f"[[hostile:{kind}]] copy {copy}"
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
            lines.append({"custom_id": f"{kind}-{copy}", "body": body})
    path.write_text("".join(orjson.dumps(line).decode() + "\n" for line in lines))
    return normal


def test_a_hostile_provider_hurts_no_neighbour_and_learns_no_secret(
    distributed_env, pg_url, sim, tmp_path
) -> None:
    sim.reconfigure(hostile=True, latency="uniform:0.05,0.4")
    env = distributed_env | {
        "CHATBATCH_MAX_ATTEMPTS": "3",
        "CHATBATCH_RETRY_BASE_SECONDS": "0.05",
        "CHATBATCH_RETRY_MAX_SECONDS": "1",
        "CHATBATCH_NOT_FOUND_GRACE_SECONDS": "1",
    }
    key = env["GEEKAI_API_KEY"]
    normal = write_batch(tmp_path / "in.jsonl")
    outputs = [chatbatch("db", "upgrade", env=env)]
    outputs.append(chatbatch("load", str(tmp_path / "in.jsonl"), "--name", "hostile", env=env))
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    workers = [start_worker(env, log) for log in logs]
    try:
        status = wait_finished(env, "hostile", timeout=240)
        peaks = [peak_rss_mb(worker.pid) for worker in workers]
    finally:
        for worker in workers:
            stop(worker)
    worker_logs = "".join(log.read_text(errors="replace") for log in logs)
    assert status["status"] == "completed", worker_logs[-3000:]
    assert status["usage_clamped"] == 2 * PER_KIND  # usage_huge and usage_negative
    assert all(peak < PEAK_RSS_MB for peak in peaks), peaks
    assert "Traceback" not in worker_logs, worker_logs[-3000:]

    db = make_engine(pg_url, pool_size=1)
    try:
        batch_id = status["id"]
        assert_all_finished(db, batch_id)
        assert_neighbours_billed_once(db, batch_id, normal, sim.stats())
        assert_key_nowhere(key, db, pg_url, [batch_id], worker_logs)
    finally:
        db.dispose()
    for command in (
        ["status", "hostile"],
        ["status", "hostile", "--json"],
        ["list"],
        ["usage", "hostile"],
        ["export", "hostile", "-o", str(tmp_path / "out.csv")],
        ["export", "hostile", "-o", str(tmp_path / "out.jsonl")],
    ):
        outputs.append(chatbatch(*command, env=env))
    for proc in outputs:
        assert_no_key(key, proc.stdout + proc.stderr, f"the output of {proc.args}")
        assert "\x1b" not in proc.stdout + proc.stderr
    for exported in ("out.csv", "out.jsonl"):
        assert_no_key(key, (tmp_path / exported).read_text(), exported)
    print(f"worker peak RSS: {', '.join(f'{peak:.0f} MB' for peak in peaks)}")
