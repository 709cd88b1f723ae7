"""Ctrl-C, SIGTERM and a forgotten batch, through the installed binary: a first interrupt stops
cleanly (nothing left claimed, nothing counted twice, `process` continues at once), a second
one quits at once, and `run` works only the batch it loaded."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from cli_process import BINARY, base_env, chatbatch, start_worker, write_prompts

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)
GRACE_SECONDS = 5  # worker.engine.STOP_GRACE_SECONDS


def embedded_env(sim, tmp_path: Path) -> dict[str, str]:
    """The embedded default (a SQLite file of this test's own) against the simulator."""
    return base_env() | {
        "CHATBATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'chatbatch.db'}",
        "CHATBATCH_API_BASE": sim.base_url,
        "GEEKAI_API_KEY": "sk-simulator",
        "CHATBATCH_POLL_FIRST_SECONDS": "0.2",
        "CHATBATCH_POLL_MAX_SECONDS": "1",
    }


def start_run(env: dict[str, str], prompts: Path, out: Path) -> subprocess.Popen[str]:
    assert BINARY
    return subprocess.Popen(
        [BINARY, "run", str(prompts), "-o", str(out), "--name", "night"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def status_of(env: dict[str, str], name: str) -> dict:
    return orjson.loads(chatbatch("status", name, "--json", env=env).stdout)


def submitted_of(env: dict[str, str], name: str) -> int:
    """How many of the batch's requests are submitted (0 while it is not loaded yet)."""
    proc = chatbatch("status", name, "--json", env=env, check=False)
    return orjson.loads(proc.stdout)["counts"]["submitted"] if proc.returncode == 0 else 0


def test_a_first_ctrl_c_stops_cleanly_and_process_continues_at_once(sim, tmp_path) -> None:
    sim.reconfigure(latency="uniform:0.5,1.5", request_latency=0.2)
    env = embedded_env(sim, tmp_path)
    n = 1500
    write_prompts(tmp_path / "prompts.jsonl", n)
    proc = start_run(env, tmp_path / "prompts.jsonl", tmp_path / "out.jsonl")
    wait_for(lambda: sim.stats()["accepted"] >= 40)
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    stopped_in = time.monotonic() - interrupted
    assert proc.returncode == 130, stderr[-2000:]
    assert stopped_in < GRACE_SECONDS + 5, stopped_in
    assert "chatbatch process night" in stderr and "Traceback" not in stderr

    after_stop = status_of(env, "night")
    assert after_stop["counts"]["submitting"] == 0
    assert after_stop["possible_duplicates"] == 0
    assert after_stop["counts"]["queued"] > 0  # it really was stopped midway

    sim.reconfigure(latency="0.05", request_latency=0)
    started = time.monotonic()
    chatbatch("process", "night", "-o", str(tmp_path / "out.jsonl"), env=env, timeout=120)
    assert time.monotonic() - started < 60  # not a 300 s lease wait
    final = status_of(env, "night")
    assert final["counts"]["succeeded"] == n and final["possible_duplicates"] == 0
    stats = sim.stats()
    assert stats["accepted"] == n and stats["duplicate_fingerprints"] == []


def test_a_second_ctrl_c_quits_at_once(sim, tmp_path) -> None:
    sim.reconfigure(latency="uniform:0.5,1.5", request_latency=3.0)  # every call hangs a while
    env = embedded_env(sim, tmp_path)
    write_prompts(tmp_path / "prompts.jsonl", 200)
    proc = start_run(env, tmp_path / "prompts.jsonl", tmp_path / "out.jsonl")
    wait_for(lambda: sim.stats()["posts"] >= 5)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    second = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr[-2000:]
    assert time.monotonic() - second < 2.5
    assert "chatbatch process night" in stderr and "Traceback" not in stderr


def test_run_works_only_the_batch_it_loaded(sim, tmp_path) -> None:
    env = embedded_env(sim, tmp_path)
    write_prompts(tmp_path / "forgotten.jsonl", 30)
    chatbatch("load", str(tmp_path / "forgotten.jsonl"), "--name", "forgotten", env=env)
    (tmp_path / "mine.jsonl").write_text(
        orjson.dumps({"custom_id": "a", "messages": [{"role": "user", "content": "hi"}]}).decode()
        + "\n"
    )
    chatbatch(
        "run", str(tmp_path / "mine.jsonl"), "-o", str(tmp_path / "o.jsonl"),
        "--model", "gpt-4o-mini", "--name", "mine", env=env,
    )  # fmt: skip
    assert status_of(env, "forgotten")["counts"]["queued"] == 30
    assert sim.stats()["accepted"] == 1


def test_a_worker_sent_sigterm_leaves_nothing_claimed(distributed_env, sim, tmp_path) -> None:
    sim.reconfigure(latency="uniform:0.5,1.5", request_latency=0.2)
    env = distributed_env
    write_prompts(tmp_path / "prompts.jsonl", 600)
    chatbatch("db", "upgrade", env=env)
    chatbatch("load", str(tmp_path / "prompts.jsonl"), "--name", "fleet", env=env)
    worker = start_worker(env, tmp_path / "worker.log")
    wait_for(lambda: sim.stats()["accepted"] >= 40)
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=GRACE_SECONDS + 25)
    log = (tmp_path / "worker.log").read_text()
    status = status_of(env, "fleet")
    assert status["counts"]["submitting"] == 0, log[-3000:]
    assert status["possible_duplicates"] == 0
    assert status["counts"]["queued"] > 0


def test_an_interrupted_simulated_run_is_continued_by_process_simulate(tmp_path) -> None:
    """The in-process simulator's tasks live beside the database: a later simulator answers
    them, so `process --simulate` finishes what `run --simulate` started (it used to hang,
    then fail every request `not_found`)."""
    env = base_env(tmp_path / "data") | {"CHATBATCH_POLL_FIRST_SECONDS": "0.5"}
    write_prompts(tmp_path / "prompts.jsonl", 3000)
    assert BINARY
    proc = subprocess.Popen(
        [BINARY, "run", str(tmp_path / "prompts.jsonl"), "-o", str(tmp_path / "out.jsonl"),
         "--name", "sim", "--simulate"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    wait_for(lambda: submitted_of(env, "sim") >= 50, timeout=120)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert "chatbatch process sim --simulate" in stderr
    left = status_of(env, "sim")["counts"]
    assert left["submitted"] + left["queued"] > 0 and left["submitting"] == 0
    chatbatch("process", "sim", "--simulate", env=env, timeout=300)
    final = status_of(env, "sim")
    assert final["counts"]["succeeded"] == 3000, final["counts"]
    assert final["possible_duplicates"] == 0


def test_two_simulated_runs_side_by_side_each_finish_their_own(tmp_path) -> None:
    env = base_env(tmp_path / "data")
    assert BINARY
    runs = []
    for name in ("left", "right"):
        write_prompts(tmp_path / f"{name}.jsonl", 200)
        runs.append(
            subprocess.Popen(
                [
                    BINARY,
                    "run",
                    str(tmp_path / f"{name}.jsonl"),
                    "-o",
                    str(tmp_path / f"{name}.out.jsonl"),
                    "--name",
                    name,
                    "--simulate",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        )
    for proc in runs:
        _, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr[-2000:]
    for name in ("left", "right"):
        assert status_of(env, name)["counts"]["succeeded"] == 200
