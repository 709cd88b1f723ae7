"""Each benchmark's quick run, as a smoke test: it must run to the end and print its figures.
No timing is asserted (the machines are shared); what the figures must never show is asserted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def quick(module: str, redis_url: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``python -m bench.MODULE --quick``; its figures go to the terminal even under -q."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBATCH_")}
    env["CHATBATCH_BENCH_REDIS_URL"] = redis_url
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with capsys.disabled():
        print("\n" + proc.stdout, end="")
    return proc.stdout


@pytest.mark.usefixtures("pg_url")
def test_engine_overhead(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = quick("engine_overhead", redis_url, capsys)
    assert len(re.findall(r"ratio chatbatch / baseline\s+\d+\.\d+", out)) == 2  # both modes
    assert out.count("1.00 GETs/result") == 2  # zero latency: one poll per result, both ways
    assert out.count("0.00 GETs/result") == 2  # sync mode polls nothing
    assert re.search(r"chatbatch sync / background time\s+\d+\.\d+", out)


@pytest.mark.usefixtures("pg_url")
def test_polling(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = quick("polling", redis_url, capsys)
    assert len(re.findall(r"GETs per result\s+\d+\.\d+", out)) == 2  # cold, then learned
    assert out.count("median fetch delay") == 2 and "plan for <= 2.0 GETs" in out


@pytest.mark.usefixtures("pg_url")
def test_load_export(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = quick("load_export", redis_url, capsys)
    assert out.count("export jsonl") == 2 and out.count("load   chatbatch") == 2


@pytest.mark.usefixtures("pg_url")
def test_scale_out(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = quick("scale_out", redis_url, capsys)
    assert out.count("accepted 300 for 300 requests, 0 submitted twice") == 2


@pytest.mark.usefixtures("pg_url")
def test_rate_limits(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = quick("rate_limits", redis_url, capsys)
    assert out.count("accepted 300 for 300 requests, 0 submitted twice") == 2


@pytest.mark.usefixtures("pg_url")
def test_claim_plans(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = quick("claim_plans", redis_url, capsys)
    assert "claim due submissions on 20,000 queued rows over 20 batches" in out
    shown = out.count("->  Subquery Scan on anon_")
    folded = sum(int(n) for n in re.findall(r"\.\.\. and (\d+) more branches like the first", out))
    assert shown + folded == 20  # one branch per running batch, in one statement
    assert re.search(r"check: \d+ branch\(es\) Limit -> Index Scan", out)
    assert re.search(r"median claim of 64: \d+\.\d+ ms, \d+\.\d+ ms with jit = off", out)


@pytest.mark.usefixtures("pg_url")
def test_hot_table(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = quick("hot_table", redis_url, capsys)
    header = r"finished rows\s+0\s+50,000\s+100,000\s+\+ANALYZE\s+\+VACUUM\s+\+archive\n"
    assert re.search(header, out)
    assert len(re.findall(r"\d+\.\d+ ms x\d+\.\d+", out)) == 11 * 6  # 11 calls, 6 columns
    assert re.search(r"tick: the sweeps below, together(\s+\d+\.\d+ ms x\d+\.\d+){6}", out)
    assert re.search(r"requests, total(\s+[\d,]+\.\d MB){6}", out)
    assert re.search(r"ix_requests_queued_batch_due(\s+[\d,]+\.\d MB){6}", out)
    dead = re.search(r"dead tuples((?:\s+[\d,]+){6})\n", out)
    assert dead, out
    counts = [int(n.replace(",", "")) for n in dead.group(1).split()]
    assert counts[4] < counts[2]  # VACUUM clears what the updates left
    live = re.search(r"live tuples((?:\s+[\d,]+){6})\n", out)
    assert live, out
    assert int(live.group(1).split()[-1].replace(",", "")) == 10_000  # the running batch only
    assert re.search(r"archive: 100,000 requests of 100 batches in \d+\.\d s", out)


@pytest.mark.usefixtures("pg_url")
def test_worker_memory(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = quick("worker_memory", redis_url, capsys)
    peaks = re.findall(r"worker peak RSS\s+(\d+) MB \(at the end\s+\d+ MB\)", out)
    assert len(peaks) == 2 and all(int(mb) > 0 for mb in peaks)  # 1,000 then 10,000
    assert re.search(r"N=\s+1,000 .* peak ratio to N=1,000\s+1\.00 ", out)
    assert re.search(r"N=\s+10,000 .* peak ratio to N=1,000\s+\d+\.\d+ ", out)


@pytest.mark.usefixtures("pg_url")
def test_dashboard_pages(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = quick("dashboard_pages", redis_url, capsys)
    assert "wrote   100,000 requests of big" in out
    assert len(re.findall(r"^  requests: .* ms .* ms +\d+\.\d+×", out, re.MULTILINE)) == 8
    assert "batch page (the report over every row)" in out
